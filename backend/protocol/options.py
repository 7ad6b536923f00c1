"""The generation options, defined once: name, type, default, allowed values and help.

Everything else is derived from `OPTIONS`: the generator's dataclass
(backend.generation.generator.GenerationOptions), the protocol's option types
(messages.OPTION_TYPES) and the command line's flags (backend.cli). A new option is a new row
here (and, where it changes the motion, code in the generator that reads it).

Standard library only: the Blender add-on vendors this package, and `dimitra client` runs
without torch.
"""

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """One generation option. low/high: the inclusive range of a number (None: unbounded);
    choices: the allowed strings; pattern and must: a string that fully matches `pattern`,
    described as `must` in errors. cli: the commands that take it as a flag ("animate": animate,
    client animate and bake; "eval"); a bool that defaults to true is the flag --no-NAME."""

    name: str
    type: type
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    must: str = ""
    cli: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.type is bool and self.default is True else f"--{dashed}"

    def check(self, value) -> None:
        """Raises ValueError, naming the option, for a value outside its range or choices."""
        if self.low is not None or self.high is not None:
            low = -math.inf if self.low is None else self.low
            high = math.inf if self.high is None else self.high
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{self.name} must be between {low:g} and {high:g}, "
                                 f"got {value}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, "
                             f"got {value!r}")
        if self.pattern is not None and not (isinstance(value, str)
                                             and re.fullmatch(self.pattern, value)):
            raise ValueError(f"{self.name} must be {self.must or 'like ' + self.pattern}, "
                             f"got {value!r}")


BILABIAL_SOURCES = ("auto", "pocketsphinx")
ANIMATE, EVAL = "animate", "eval"

OPTIONS: tuple[Option, ...] = (
    Option("seed", int, 0, "random seed of the sampling (the same seed, the same motion)",
           cli=(ANIMATE, EVAL)),
    Option("expressiveness", float, 1.5,
           "classifier-free guidance on the audio (default 1.5; 1 = none, faster; 2-2.5 "
           "livelier)", low=0, high=5, cli=(ANIMATE, EVAL)),
    Option("head_motion", float, 1.0, "head motion strength (scales head rotation and "
           "translation)", low=0, high=5, cli=(ANIMATE,)),
    Option("lips", float, 1.0, "scales lower-face motion", low=0, high=5),
    Option("upper_face", float, 1.0, "scales brows, lids and gaze", low=0, high=5),
    Option("blink", bool, True, "keep the eyes open", cli=(ANIMATE,)),
    Option("steps", int, 2, "sampling steps (default 2; the choice: docs/MODEL_CARD.md, "
           "\"Sampling steps\")", low=1, high=100, cli=(ANIMATE, EVAL)),
    Option("lip_contact", float, 0.05, "inner-lip gaps under this (inter-ocular units) seal; "
           "0 = off", cli=(EVAL,)),
    Option("lip_sharpen", float, 0.2, "near closures, lift each lower-face frame away from "
           "its neighbours' mean, so the lips meet and part crisply; 0 = off", low=0, high=1,
           cli=(EVAL,)),
    Option("closure_guidance", float, 1.0, "pull the lips shut on detected p/b/m frames; "
           "0 = off", cli=(EVAL,)),
    Option("audio_delay", int, 1, "frames the motion lags the audio features (chosen on dev)",
           cli=(EVAL,)),
    Option("lips_head", float, 0.7, "share of the lower face taken from the model's lips head "
           "(a deterministic map from the speech), the rest from the network's draw; no effect "
           "on a model without a head (the choice: docs/MODEL_CARD.md, \"The lips head\")",
           low=0, high=1, cli=(ANIMATE, EVAL)),
    Option("bilabials", str, "auto", "how the lips learn where p, b, m are: auto = the "
           "detector that ships with the model (fast); pocketsphinx = phone recognition "
           "(English, about 1.6 s more per minute of audio)", choices=BILABIAL_SOURCES,
           cli=(ANIMATE, EVAL)),
    Option("language", str, "auto", "the speech's language: auto (default: heard by the "
           "Whisper encoder and kept in the motion file) or an ISO code such as en, fr, de, es, "
           "ja; English-only steps (PocketSphinx) run on English alone",
           pattern=r"auto|[a-z]{2,3}",
           must="'auto' or an ISO 639 code such as 'en' or 'fr'", cli=(ANIMATE,)),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
DEFAULTS: dict[str, object] = {option.name: option.default for option in OPTIONS}


def validate(options: dict) -> None:
    """Raises ValueError, naming the option, for an unknown option or a value out of range.
    Options left out take their defaults (which are valid)."""
    for name, value in options.items():
        if name not in BY_NAME:
            raise ValueError(f"unknown generation option {name!r}; known: "
                             f"{', '.join(BY_NAME)}")
        BY_NAME[name].check(value)


def option_types(table: tuple[Option, ...] = OPTIONS) -> dict[str, type]:
    """{name: type} of the options in `table` (messages.OPTION_TYPES)."""
    return {option.name: option.type for option in table}


def cli_options(command: str) -> tuple[Option, ...]:
    """The options `command` ("animate" or "eval") takes as flags, in table order."""
    return tuple(option for option in OPTIONS if command in option.cli)
