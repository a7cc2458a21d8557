//go:build unix

package gateway

import (
	"net"
	"syscall"
)

// alive reports whether an idle connection is still open, without blocking: a peek that
// finds the peer's FIN or an error means the server closed it while it sat in the pool.
// Bytes waiting on an idle connection mean it is unusable too: on plain HTTP they break
// the framing, under TLS they are the close_notify a server sends before it hangs up.
func alive(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		return false
	}
	// Only "nothing to read yet" is alive: not an error, the FIN, or unexpected bytes.
	return rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
}
