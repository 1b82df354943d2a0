"""The network half of ``fetch-data``: the errors it raises, and one bounded HTTP download
(an overall deadline, a stall timeout, a byte cap; written atomically)."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

CONNECT_TIMEOUT_S = 30.0
_REASONS = (("timed out", ("timeout", "timed out")), ("connection refused", ("refused",)),
            ("DNS lookup failed", ("resolution", "name or service", "getaddrinfo")))


class FetchError(Exception):
    """A fetch that failed; ``problems`` names each missing or mismatched file."""
    def __init__(self, message: str, problems: list[str] | tuple = ()):
        super().__init__(message)
        self.problems = list(problems)


class BadDownload(FetchError):
    """A download that may succeed when repeated (cut transfer, archive that won't unzip)."""


class NetworkError(FetchError):
    """The download did not come through: offline, stalled or past its deadline."""


class OfflineError(NetworkError):
    """The download location could not be reached (DNS, refused connection, timeout)."""


class StalledError(NetworkError, BadDownload):
    """The server was reached but sent nothing for the stall timeout (retried once)."""


class DeadlineError(NetworkError):
    """The download did not finish within its overall deadline."""


def _host(url: str) -> str:
    return url.partition("://")[2].split("/")[0] or url


def offline(url: str, exc: BaseException) -> OfflineError:
    text = repr(exc).lower()
    why = next((r for r, keys in _REASONS if any(k in text for k in keys)), "connection failed")
    return OfflineError(f"offline: could not reach {_host(url)} ({why})")


class Clock:
    """The overall deadline and the stall timeout of one fetch (both attempts)."""
    def __init__(self, deadline: float, stall: float):
        if not (deadline > 0 and stall > 0):
            raise FetchError(f"deadline and stall timeout must be > 0 (got {deadline}, {stall})")
        self.deadline, self.stall = float(deadline), float(stall)
        self.end = time.monotonic() + self.deadline

    def left(self) -> float:
        return self.end - time.monotonic()

    def timed_out(self, url: str, got: int, total: int | None) -> NetworkError:
        """The error for a read that timed out: past the deadline, or a stall."""
        if self.left() <= 0.01:
            of = f" of {total:,}" if total else ""
            return DeadlineError(f"deadline passed: the download from {_host(url)} did not "
                                 f"finish within {self.deadline:g} s (--deadline); "
                                 f"{got:,}{of} bytes arrived")
        return StalledError(f"stalled: {_host(url)} was reached but sent nothing for "
                            f"{self.stall:g} s (--stall-timeout); {got:,} bytes arrived")


def download(url: str, target: Path, clock: Clock, cap: int) -> None:
    """Stream ``url`` into ``target`` (atomically: a temp file, then a rename) within the
    clock's deadline and stall timeout and at most ``cap`` bytes."""
    import requests
    if clock.left() <= 0:
        raise clock.timed_out(url, 0, None)
    try:
        resp = requests.get(url, stream=True, timeout=(
            min(CONNECT_TIMEOUT_S, clock.stall, clock.left()), min(clock.stall, clock.left())))
    except requests.exceptions.SSLError as e:   # before its base, ConnectionError
        raise FetchError(f"download of {url} failed: {e}") from None
    except requests.ConnectTimeout as e:
        raise (clock.timed_out(url, 0, None) if clock.left() <= 0.01 else offline(url, e)) \
            from None
    except requests.ReadTimeout:
        raise clock.timed_out(url, 0, None) from None
    except requests.ConnectionError as e:
        raise offline(url, e) from None
    except requests.RequestException as e:   # a malformed URL, too many redirects
        raise FetchError(f"download of {url} failed: {e}") from None
    with resp:
        try:
            resp.raise_for_status()
        except requests.HTTPError as e:
            raise FetchError(f"download of {url} failed: {e}") from None
        total = int(resp.headers.get("Content-Length") or 0) or None
        if total and total > cap:
            raise FetchError(f"the archive at {url} is {total:,} bytes, more than the "
                             f"{cap:,} the manifest allows; not downloaded")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f"{target.name}.part-", dir=target.parent)
        except OSError as e:
            raise FetchError(f"could not save the download in {target.parent}: "
                             f"{e.strerror or e}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                got = _stream(resp, out, url, clock, cap, total)
            if total and got != total:
                raise BadDownload(f"download of {url} was cut short ({got:,} of {total:,} bytes)")
            os.replace(tmp, target)
        except OSError as e:
            raise FetchError(f"could not save the download in {target.parent}: "
                             f"{e.strerror or e}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)


def _stream(resp, out, url: str, clock: Clock, cap: int, total: int | None) -> int:
    """Copy the body of ``resp`` to ``out``, one socket read at a time, each read bounded by
    the stall timeout and the time left; returns the byte count."""
    sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
    read = getattr(resp.raw, "read1", None) or resp.raw.read   # read1: urllib3 >= 2
    bar, got = _progress(total), 0
    try:
        while True:
            if clock.left() <= 0:
                raise clock.timed_out(url, got, total)
            if sock is not None:
                sock.settimeout(min(clock.stall, max(clock.left(), 0.01)))
            try:
                chunk = read(1 << 16, decode_content=True)
            except Exception as e:  # noqa: BLE001 -- urllib3's errors: a timeout or a cut
                if _is_timeout(e):
                    raise clock.timed_out(url, got, total) from None
                raise BadDownload(f"download of {url} was cut short "
                                  f"({type(e).__name__})") from None
            if not chunk:
                return got
            got += len(chunk)
            if got > cap:
                raise FetchError(f"the archive at {url} passed the {cap:,} bytes the "
                                 "manifest allows; download stopped")
            out.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


def _is_timeout(e: BaseException) -> bool:
    """A socket timeout, bare or as urllib3 wraps it (ReadTimeoutError: raised from it)."""
    return any(isinstance(x, TimeoutError) for x in (e, e.__cause__, e.__context__))


def _progress(total: int | None):
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, leave=False)
