"""Where an answer's image URL may be fetched from, and with which headers.

Owns the download rules of DESIGN.md ("The API"): our headers (Authorization and
the provider's extra headers) go only to the gateway's exact origin (scheme,
host and port); `http:` only to the gateway's own host when the gateway itself
speaks http, never as a downgrade of an https gateway; no `file:` or other scheme;
no loopback, link-local or private address unless it is the gateway's own;
redirects followed by hand, a few at most, each over https, re-checked and
without our headers. The body is capped while it streams (answer.read_capped).

Every refusal is a BadResponse naming the rule. Never follows a redirect it has
not checked, and never sends our headers anywhere but the gateway.
Known limit: the address check resolves the name itself, so a name whose DNS
answer changes between our look-up and aiohttp's (rebinding) is not caught.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from yarl import URL

from pipeline.config.redact import clean
from pipeline.errors import BadResponse
from pipeline.gateway.answer import read_capped

MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int | None

    @classmethod
    def of(cls, url: str | URL) -> Origin:
        parsed = parse(url) if isinstance(url, str) else url
        return cls(parsed.scheme.lower(), (parsed.raw_host or "").lower(),
                   parsed.port or _DEFAULT_PORTS.get(parsed.scheme.lower()))


def parse(url: str) -> URL:
    """The URL as aiohttp will read it: the checks judge the very object that is fetched,
    so no two parsers can disagree about its host."""
    try:
        return URL(url)
    except (ValueError, TypeError) as exc:  # a bad port, a backslash, an unclosed [IPv6
        raise BadResponse(f"the answer's url is malformed ({exc}): {_short(url)}") from exc


class Downloads:
    """Fetches answer URLs for one gateway. `headers()` gives our headers for its origin."""

    def __init__(self, session: aiohttp.ClientSession, gateway_url: str,
                 headers: Callable[[], Mapping[str, str]], timeout: aiohttp.ClientTimeout,
                 resolve: Callable[[str, int | None], Awaitable[list[str]]] | None = None):
        self.session = session
        self.resolve = resolve or _addresses  # a name's addresses (tests pass their own)
        self.gateway = Origin.of(gateway_url)
        self.headers = headers
        self.timeout = timeout
        self._gateway_addresses: set[str] | None = None

    async def fetch(self, url: str, limit: int) -> bytes:
        """The body at `url`, at most `limit` bytes, after every rule above."""
        first = True
        for _ in range(MAX_REDIRECTS + 1):
            target_url = await self.check(url, redirected=not first)
            ours = first and Origin.of(target_url) == self.gateway
            headers = dict(self.headers()) if ours else {}
            try:
                async with self.session.get(target_url, headers=headers, timeout=self.timeout,
                                            allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        target = response.headers.get("Location")
                        if not target:
                            raise BadResponse("downloading the result: a redirect with no "
                                              "Location")
                        url, first = urljoin(url, target), False
                        continue
                    if response.status != 200:
                        raise BadResponse(
                            f"downloading the result failed: HTTP {response.status}")
                    return await read_capped(response, limit)
            # ValueError: a URL yarl cannot encode (a bad IDNA name, say).
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise BadResponse(f"downloading the result failed: {exc}") from exc
        raise BadResponse(f"downloading the result: more than {MAX_REDIRECTS} redirects")

    async def check(self, url: str, *, redirected: bool = False) -> URL:
        """`url` parsed, or BadResponse unless it may be fetched (see the module's rules)."""
        parsed = parse(url)
        where = Origin.of(parsed)
        if where.scheme not in _DEFAULT_PORTS:
            raise BadResponse(f"the answer's url is not http(s), refused: {_short(url)}")
        if not where.host:
            raise BadResponse(f"the answer's url names no host: {_short(url)}")
        if parsed.user is not None or parsed.password is not None:
            raise BadResponse(f"the answer's url carries a user name, refused: {_short(url)}")
        if where.scheme == "http":
            if redirected:
                raise BadResponse(f"a download redirected to http, refused: {_short(url)}")
            # DESIGN: "over https (or the gateway's own scheme and host)".
            if (where.scheme, where.host) != (self.gateway.scheme, self.gateway.host):
                why = ("a downgrade from the gateway's https" if where.host == self.gateway.host
                       else "not https")
                raise BadResponse(f"the answer's url is {why}, refused: {_short(url)}")
        if where.host != self.gateway.host:
            for address in await self._addresses(where):
                if _internal(address) and address not in await self._own_addresses():
                    raise BadResponse(f"the answer's url points at an internal address "
                                      f"({address}) that is not the gateway's, refused: "
                                      f"{_short(url)}")
        return parsed

    async def _own_addresses(self) -> set[str]:
        if self._gateway_addresses is None:
            try:
                found = await self._addresses(self.gateway)
            except BadResponse:
                found = []
            self._gateway_addresses = set(found)
        return self._gateway_addresses


    async def _addresses(self, origin: Origin) -> list[str]:
        try:  # an address already: nothing to look up
            return [str(ipaddress.ip_address(origin.host.strip("[]")))]
        except ValueError:
            return await self.resolve(origin.host, origin.port)


async def _addresses(host: str, port: int | None) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:  # UnicodeError too: a name IDNA cannot encode
        raise BadResponse(f"the answer's url host {clean(host, limit=100)} does not resolve: "
                          f"{exc}") from exc
    return sorted({str(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos})


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
            or ip.is_multicast or ip.is_unspecified)


def _short(url: str) -> str:
    return clean(url, limit=200)
