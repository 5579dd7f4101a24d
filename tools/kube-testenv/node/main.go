// kube-node is the node half of kube-testenv --node: one binary, built from the
// same k8s.io/kubernetes module graph as kube-testenv, that runs one component
// chosen by its first argument:
//
//	kube-node kubelet   [kubelet flags]
//	kube-node proxy     [kube-proxy flags]
//	kube-node scheduler [kube-scheduler flags]
//
// kube-testenv --node starts these as child processes (inside the node's
// network and mount namespaces for the kubelet and kube-proxy), so that the
// control plane binary the other tests use stays as small as before.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client metrics, as the upstream commands register
	_ "k8s.io/component-base/metrics/prometheus/version"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kube-node kubelet|proxy|scheduler [flags]")
		os.Exit(2)
	}
	var cmd *cobra.Command
	switch os.Args[1] {
	case "kubelet":
		cmd = kubeletapp.NewKubeletCommand(context.Background())
	case "proxy":
		cmd = proxyapp.NewProxyCommand()
	case "scheduler":
		cmd = schedulerapp.NewSchedulerCommand()
	default:
		fmt.Fprintf(os.Stderr, "kube-node: unknown component %q (kubelet, proxy or scheduler)\n", os.Args[1])
		os.Exit(2)
	}
	cmd.SetArgs(os.Args[2:])
	os.Exit(cli.Run(cmd))
}
