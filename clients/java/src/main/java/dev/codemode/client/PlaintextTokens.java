package dev.codemode.client;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.regex.Pattern;

/**
 * Where a token may travel in plaintext: unix sockets and loopback only. The rule is the Python
 * client's ({@code clients/python/src/codemode/_channel.py}) exactly, so every client accepts and
 * refuses the same targets; anything it cannot recognise as local counts as remote. Host names
 * other than "localhost" are never resolved.
 */
final class PlaintextTokens {
  /** A dotted quad without leading zeros, as Python's ipaddress accepts it. */
  private static final Pattern IPV4 =
      Pattern.compile("(0|[1-9][0-9]{0,2})(\\.(0|[1-9][0-9]{0,2})){3}");

  private PlaintextTokens() {}

  static boolean isLocalTarget(String target) {
    if (target.startsWith("unix:") || target.startsWith("unix-abstract:")) {
      return true;
    }
    String host = target;
    int scheme = host.indexOf("://");
    if (scheme >= 0) {
      host = host.substring(scheme + 3);
    }
    if (host.startsWith("[")) {
      int end = host.indexOf(']');
      if (end > 0) {
        host = host.substring(1, end);
      }
    } else if (host.chars().filter(c -> c == ':').count() == 1) {
      host = host.substring(0, host.lastIndexOf(':'));
    }
    if (host.equals("localhost")) {
      return true;
    }
    if (!IPV4.matcher(host).matches() && !host.contains(":")) {
      return false; // a host name: remote, and not looked up
    }
    try {
      // For an address literal, getByName only parses; it never resolves.
      return InetAddress.getByName(host).isLoopbackAddress();
    } catch (UnknownHostException | SecurityException e) {
      return false;
    }
  }

  /** The refusal every client gives, worded as the Python client words it. */
  static IllegalArgumentException refusal(String target) {
    return new IllegalArgumentException(
        "codemode: refusing to send the API token in plaintext to \""
            + target
            + "\": use TLS (drop plaintext()), or call allowInsecureToken()");
  }
}
