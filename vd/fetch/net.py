"""HTTP client for downloads: proxies (http, https, socks5, socks5h), timeouts, HF token.

Proxies come from `--proxy` when given, else from the standard variables (HTTP_PROXY,
HTTPS_PROXY, ALL_PROXY, NO_PROXY, either case). `socks://` (as GNOME and KDE write it) is read
as `socks5://`, and a scheme httpx cannot use is one clear sentence instead of a crash.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Optional

from vd import __version__, settings
from vd.errors import UsageError

if TYPE_CHECKING:
    import httpx

_SCHEMES = {"http": "http", "https": "https", "socks5": "socks5", "socks5h": "socks5h", "socks": "socks5"}


def normalise_proxy(url: str, where: str = "--proxy") -> str:
    """Return `url` with a scheme httpx understands, or raise UsageError with one sentence."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    scheme, rest = url.split("://", 1)
    s = _SCHEMES.get(scheme.lower())
    if s is None:
        raise UsageError(f"unsupported proxy {url!r} in {where}: use http://, https://, socks5:// or socks5h://")
    if s.startswith("socks"):
        try:
            import socksio  # noqa: F401  (httpx needs it for SOCKS)
        except ImportError:  # pragma: no cover - socksio is a dependency
            raise UsageError(f"the SOCKS proxy in {where} needs the socksio package: pip install socksio") from None
    return f"{s}://{rest}"


def proxy_mounts(proxy: Optional[str] = None) -> dict[str, Optional[str]]:
    """URL pattern -> proxy URL (None = direct), httpx `mounts` style."""
    if proxy:
        return {"all://": normalise_proxy(proxy)}
    from httpx._utils import get_environment_proxies  # same parsing httpx applies with trust_env

    mounts: dict[str, Optional[str]] = {}
    for pattern, url in get_environment_proxies().items():
        if url is None:
            mounts[pattern] = None
        else:
            var = {"http://": "HTTP_PROXY", "https://": "HTTPS_PROXY"}.get(pattern, "ALL_PROXY")
            mounts[pattern] = normalise_proxy(url, where=var)
    return mounts


def describe_proxies(proxy: Optional[str] = None) -> str:
    mounts = {k: v for k, v in proxy_mounts(proxy).items() if v}
    return ", ".join(f"{k} via {_redact(v)}" for k, v in mounts.items()) or "direct"


def _redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def timeout_seconds() -> float:
    return settings.fetch_timeout()


def make_client(proxy: Optional[str] = None) -> httpx.Client:
    """An httpx.Client that honours the proxy settings and never decompresses bodies."""
    import httpx

    _bigger_reads()
    mounts = {}
    for pattern, url in proxy_mounts(proxy).items():
        mounts[pattern] = httpx.HTTPTransport(proxy=url) if url else httpx.HTTPTransport()
    t = timeout_seconds()
    return httpx.Client(
        mounts=mounts,
        trust_env=False,  # proxies resolved above; env CA bundles still read below
        verify=_verify_setting(),
        timeout=httpx.Timeout(t, connect=min(t, 15.0)),
        follow_redirects=True,
        headers={"User-Agent": f"vd/{__version__} (+vd fetch)", "Accept-Encoding": "identity"},
    )


def _bigger_reads(nbytes: int = 1 << 20) -> None:
    """Let httpcore ask for up to 1 MiB per recv() instead of 64 KiB: on loopback this brings
    the CPU cost of receiving + writing down to curl's (bench/fetch.md); harmless elsewhere."""
    try:
        from httpcore._sync.http11 import HTTP11Connection

        if getattr(HTTP11Connection, "READ_NUM_BYTES", nbytes) < nbytes:
            HTTP11Connection.READ_NUM_BYTES = nbytes
    except Exception:  # pragma: no cover - private attribute moved: keep the default
        pass


def _verify_setting():
    bundle = settings.ca_bundle()
    if bundle:
        return ssl.create_default_context(cafile=bundle)
    return True


def hf_token() -> Optional[str]:
    """HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN), else the token file `hf auth login` writes."""
    token = settings.hf_token()
    if token:
        return token
    try:
        tok = settings.hf_token_path().read_text().strip()
        return tok or None
    except OSError:
        return None
