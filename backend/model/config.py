"""The cMDT's size and shape, apart from the network, so the torch-free path can read it."""

from dataclasses import asdict, dataclass


@dataclass
class CMDTConfig:
    region_dims: tuple[int, int, int] = (24, 16, 6)   # lower face, upper face, head pose
    audio_dim: int = 384
    identity_dim: int = 10
    width: int = 128
    depth: int = 4
    heads: int = 4
    window: int = 100          # frames per window (4 s at 25 fps)
    context: int = 16          # leading frames that may be given (the previous window's tail)
    dropout: float = 0.0       # on each block's attention and MLP output, in training only

    @property
    def motion_dim(self) -> int:
        return sum(self.region_dims)

    def to_dict(self) -> dict:
        return asdict(self)
