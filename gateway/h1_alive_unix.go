//go:build unix

package gateway

import (
	"net"
	"syscall"
)

// alive reports whether an idle connection is still open, without blocking: a peek that
// finds the peer's FIN or an error means the server closed it while it sat in the pool.
// Bytes waiting on an idle plain connection break HTTP framing, so that connection is
// dropped too; under TLS they may be a session ticket the TLS layer reads in due course.
func alive(conn net.Conn, isTLS bool) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		return false
	}
	switch {
	case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK:
		return true
	case rerr != nil, n == 0:
		return false
	default:
		return isTLS
	}
}
