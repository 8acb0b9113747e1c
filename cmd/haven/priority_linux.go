package main

import (
	"os"
	"strconv"
	"syscall"
)

// lowerPriority makes this process yield to the server beside it: CPU
// niceness 10 and the lowest best-effort I/O priority (honoured by the
// BFQ and CFQ I/O schedulers; others ignore it, which the rate limit
// covers). Linux sets both per thread, so every thread of the process is
// set; threads started later inherit it. Failures are ignored.
func lowerPriority() {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	const ioprioWhoProcess, ioprioClassBE, lowest = 1, 2, 7
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, tid, 10)
		_, _, _ = syscall.Syscall(syscall.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), ioprioClassBE<<13|lowest)
	}
}
