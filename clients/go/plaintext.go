package codemode

import (
	"fmt"
	"net/netip"
	"strings"
)

// isLocalTarget reports whether target is a unix socket or a loopback
// address, the only places a token may travel in plaintext. It follows the
// Python client's rule (clients/python/src/codemode/_channel.py) exactly, so
// every client accepts and refuses the same targets: anything it cannot
// recognise as local counts as remote.
func isLocalTarget(target string) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	host := target
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	if strings.HasPrefix(host, "[") {
		if end := strings.Index(host, "]"); end > 0 {
			host = host[1:end]
		}
	} else if strings.Count(host, ":") == 1 {
		host = host[:strings.LastIndex(host, ":")]
	}
	if host == "localhost" {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}

// plaintextTokenError is the refusal every client gives, worded as the
// Python client words it, with this package's remedies.
func plaintextTokenError(target string) error {
	return fmt.Errorf("codemode: refusing to send the API token in plaintext to %q: "+
		"use TLS (WithTLSFiles / WithTLSConfig), or pass WithAllowInsecureToken()", target)
}
