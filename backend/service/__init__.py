"""`dimitra serve` (the server and its worker processes), `dimitra proxy`, `dimitra client`."""
