"""python-etcd3 against an Ordo cluster serving the etcd API over TLS.

Usage: etcd3_tls.py HOST PORT CA CERT KEY OTHER_CA

With the client certificate: puts, gets, prefix ranges, deletes, a transaction, a lease,
a watch replayed from a revision, and the member list, each checked. Without a client
certificate, trusting another CA, and in plain text: each request must fail. Prints one
line per check; exits non-zero with the reason at the first one that does not hold.
"""

import sys

import etcd3

TIMEOUT_S = 10


def check(what, condition, detail=""):
    if not condition:
        print(f"FAILED: {what} {detail}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def refused(what, client):
    try:
        client.get("/py/a")
    except Exception as error:  # the library wraps gRPC errors in its own types
        print(f"ok: {what} ({type(error).__name__})", flush=True)
        return
    print(f"FAILED: {what}: a request succeeded", flush=True)
    sys.exit(1)


def main():
    host, port, ca, cert, key, other_ca = sys.argv[1:7]
    port = int(port)
    client = etcd3.client(host=host, port=port, ca_cert=ca, cert_cert=cert, cert_key=key,
                          timeout=TIMEOUT_S)

    client.put("/py/a", "1")
    value, meta = client.get("/py/a")
    check("put then get", value == b"1", repr(value))

    client.put("/py/b", "2")
    client.put("/py/c", "3")
    keys = sorted(m.key for _, m in client.get_prefix("/py/"))
    check("prefix range", keys == [b"/py/a", b"/py/b", b"/py/c"], repr(keys))

    check("delete", client.delete("/py/c") is True)
    value, _ = client.get("/py/c")
    check("deleted key is gone", value is None, repr(value))

    ok, _ = client.transaction(
        compare=[client.transactions.value("/py/a") == "1"],
        success=[client.transactions.put("/py/t", "yes")],
        failure=[client.transactions.put("/py/t", "no")],
    )
    value, _ = client.get("/py/t")
    check("transaction took its success branch", ok and value == b"yes", repr((ok, value)))

    lease = client.lease(60)
    client.put("/py/leased", "x", lease=lease)
    _, meta = client.get("/py/leased")
    check("put with a lease", meta.lease_id == lease.id, repr(meta.lease_id))
    check("lease has its time to live", 0 < lease.remaining_ttl <= 60, repr(lease.remaining_ttl))
    lease.revoke()
    value, _ = client.get("/py/leased")
    check("revoking the lease deletes its key", value is None, repr(value))

    client.put("/py/w", "first")
    _, meta = client.get("/py/w")
    event = client.watch_once("/py/w", timeout=TIMEOUT_S, start_revision=meta.mod_revision)
    check("watch replays from a revision", event.value == b"first", repr(event.value))

    members = list(client.members)
    check("member list", len(members) == 3, repr(len(members)))
    urls = [url for m in members for url in m.client_urls]
    check("members advertise https client URLs", all(u.startswith("https://") for u in urls),
          repr(urls))
    client.close()

    refused("a client without a certificate is refused",
            etcd3.client(host=host, port=port, ca_cert=ca, timeout=TIMEOUT_S))
    # Trusting another CA, the client refuses the server's certificate.
    refused("a client that trusts another CA fails",
            etcd3.client(host=host, port=port, ca_cert=other_ca, cert_cert=cert, cert_key=key,
                         timeout=TIMEOUT_S))
    # A plain-text client at the TLS port.
    plain = etcd3.client(host=host, port=port, timeout=TIMEOUT_S)
    refused("a plain-text client at the TLS port fails", plain)
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
