/**
 * Where a token may travel in plaintext: unix sockets and loopback only. The
 * rule is the Python client's (clients/python/src/codemode/_channel.py)
 * exactly, so every client accepts and refuses the same targets; anything
 * it cannot recognise as local counts as remote.
 */
import { BlockList, isIP } from "node:net";

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4"); // also matches IPv4-mapped IPv6 (::ffff:127.x.y.z)
LOOPBACK.addAddress("::1", "ipv6");

export function isLocalTarget(target: string): boolean {
  if (target.startsWith("unix:") || target.startsWith("unix-abstract:")) return true;
  let host = target.includes("://") ? target.slice(target.indexOf("://") + 3) : target;
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    if (end > 0) host = host.slice(1, end);
  } else if (host.split(":").length === 2) {
    host = host.slice(0, host.lastIndexOf(":"));
  }
  if (host === "localhost") return true;
  const version = isIP(host);
  return version !== 0 && LOOPBACK.check(host, version === 6 ? "ipv6" : "ipv4");
}

/** The refusal every client gives, worded as the Python client words it, with this package's remedies. */
export function plaintextTokenError(target: string): Error {
  return new Error(
    `codemode: refusing to send the API token in plaintext to ${JSON.stringify(target)}: ` +
      "use TLS (the `tls` option), or pass allowInsecureToken: true",
  );
}
