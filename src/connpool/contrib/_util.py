"""Helpers shared by the connectors (no client library imported here)."""

from __future__ import annotations

__all__ = ["require_asyncio"]


def require_asyncio(what: str) -> None:
    """Raise ``RuntimeError`` naming ``what`` when called from an async library other than asyncio."""
    import sniffio

    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return  # not in an async context: let the client library report it
    if library != "asyncio":
        raise RuntimeError(
            f"{what} runs on asyncio only, not on {library}: use AsyncPool(..., backend='asyncio') "
            "under asyncio, or the sync connector with Pool (e.g. in a worker thread)"
        )
