//go:build linux || darwin

package outfile

import "syscall"

// FreeSpace is the number of bytes an unprivileged writer may still use in dir.
func FreeSpace(dir string) (int64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
