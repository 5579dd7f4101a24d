// pause is the sandbox ("infrastructure") container of kube-testenv --node's pods: it holds
// the pod's namespaces, reaps the zombies it inherits, and exits 0 on SIGTERM or SIGINT.
// Built static (CGO_ENABLED=0) by build-node.sh; kube-testenv wraps it in an OCI image and
// imports it into its containerd, since the node has no registry to pull one from.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
