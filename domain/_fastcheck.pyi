from collections.abc import Callable, Sequence
from typing import Any

def configure(
    loads: Callable[[bytes], Any],
    dumps: Callable[..., bytes],
    sort_keys_option: int,
    log_genesis: str,
    genesis_hash: str,
    /,
) -> None: ...
def check(
    rows: Sequence[tuple[Any, ...]],
    heads: dict[str, tuple[int, str, str, str]],
    type_names: dict[str, str],
    keep: list[Any] | None,
    as_type: type[tuple[Any, ...]],
    /,
) -> tuple[int | None, int]: ...
def canonical(state: bytes, aggregate_id: str, version: int, type_name: str, /) -> bytes | None: ...
