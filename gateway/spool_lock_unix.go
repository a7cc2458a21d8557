//go:build unix

package gateway

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on f without waiting; it fails if another process holds
// it. The kernel drops the lock when the process dies, however it dies.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
