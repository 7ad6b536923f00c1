"""`dimitra proxy`: ZeroMQ's own proxy in front of several `dimitra serve --connect` servers.

Clients connect to the front (a ROUTER, the address they would give a lone server); servers on
any machines connect to the back (a DEALER), which hands each incoming message to the next
server in turn. Replies find their way back through the routing envelope (docs/PROTOCOL.md,
"Proxy deployment"). The proxy holds no state and parses nothing.
"""

import threading

import zmq


class Proxy:
    """zmq.proxy_steerable in a thread, so it can be stopped cleanly (tests, `serve`)."""

    def __init__(self, front: str, back: str, context: zmq.Context | None = None):
        self.context = context or zmq.Context.instance()
        self.front_address, self.back_address = front, back
        self._control_address = f"inproc://dimitra-proxy-{id(self)}"
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dimitra-proxy", daemon=True)

    def start(self) -> "Proxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        front = self.context.socket(zmq.ROUTER)
        back = self.context.socket(zmq.DEALER)
        control = self.context.socket(zmq.PAIR)
        for sock in (front, back, control):
            sock.linger = 0
        front.bind(self.front_address)
        back.bind(self.back_address)
        control.bind(self._control_address)
        self._ready.set()
        try:
            zmq.proxy_steerable(front, back, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in (front, back, control):
                sock.close(linger=0)

    def stop(self) -> None:
        control = self.context.socket(zmq.PAIR)
        control.connect(self._control_address)
        control.send(b"TERMINATE")
        control.close(linger=0)
        self._thread.join(10)

    def wait(self) -> None:
        while self._thread.is_alive():
            self._thread.join(0.5)


def run_proxy(front: str, back: str) -> int:
    import signal

    proxy = Proxy(front, back).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"dimitra proxy: clients connect to {front}, servers to {back} "
          "(`dimitra serve --connect`)", flush=True)
    while not stop.wait(0.5):
        pass
    proxy.stop()
    return 0
