#!/usr/bin/env python3
"""Acquire an access token with Microsoft's MSAL for Python.

Used to prove that intraport's development issuer works with Microsoft's own
client library. Client credentials by default; the resource-owner password
grant when --username and --password are given (with --secret the app is
confidential, without it public).

Prints the access token on stdout and exits 0; on failure prints MSAL's error
JSON on stderr and exits 1 (2 for usage errors).
"""

import argparse
import json
import sys

from urllib.parse import urlparse

import msal
import requests


class _PortKeepingSession(requests.Session):
    """A requests session that puts the authority's port back where MSAL drops it.

    MSAL builds the user-realm discovery URL from the authority's host name
    alone (msal/authority.py, user_realm_discovery), so with an authority on
    a port other than 443 it would ask port 443. Only URLs for the
    authority's host without a port are rewritten.
    """

    def __init__(self, authority, ca):
        super().__init__()
        parsed = urlparse(authority)
        self._host, self._netloc = parsed.hostname, parsed.netloc
        self.verify = ca if ca else True
        # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override an
        # explicit verify= (psf/requests#3829); this session must trust
        # exactly the CA it was given.
        self.trust_env = False

    def request(self, method, url, *args, **kwargs):
        parsed = urlparse(url)
        if parsed.netloc == self._host and self._netloc != self._host:
            url = parsed._replace(netloc=self._netloc).geturl()
        return super().request(method, url, *args, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authority", required=True,
                        help="authority URL including the tenant, e.g. https://127.0.0.1:PORT/TENANT")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--secret", help="client secret (confidential client)")
    parser.add_argument("--scope", required=True, action="append",
                        help="scope to request; repeat for several")
    parser.add_argument("--ca", help="CA certificate PEM to trust for HTTPS")
    parser.add_argument("--username")
    parser.add_argument("--password")
    args = parser.parse_args()

    if (args.username is None) != (args.password is None):
        parser.error("--username and --password go together")
    if args.username is None and args.secret is None:
        parser.error("client credentials need --secret")

    common = dict(
        authority=args.authority,
        # The development issuer is not known to Microsoft's instance
        # discovery service, and there is no network to ask it anyway.
        instance_discovery=False,
        http_client=_PortKeepingSession(args.authority, args.ca),
    )
    try:
        if args.secret is not None:
            app = msal.ConfidentialClientApplication(
                args.client_id, client_credential=args.secret, **common)
        else:
            app = msal.PublicClientApplication(args.client_id, **common)
        if args.username is not None:
            result = app.acquire_token_by_username_password(
                args.username, args.password, scopes=args.scope)
        else:
            result = app.acquire_token_for_client(scopes=args.scope)
    except Exception as exc:  # MSAL raises on discovery/transport failures
        print(json.dumps({"error": type(exc).__name__, "error_description": str(exc)}),
              file=sys.stderr)
        return 1

    if "access_token" not in result:
        print(json.dumps(result), file=sys.stderr)
        return 1
    print(result["access_token"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
