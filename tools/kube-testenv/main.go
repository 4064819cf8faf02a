// Command kube-testenv runs the real Kubernetes control-plane components that
// the integration tests need, built from the published Go modules:
//
//	kube-testenv kube-apiserver [flags]
//	kube-testenv etcd [flags]
//	kube-testenv kube-controller-manager [flags]
package main

import (
	"fmt"
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	mode, rest := os.Args[1], os.Args[2:]
	switch mode {
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "etcd":
		etcdmain.Main(append([]string{"etcd"}, rest...))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kube-testenv kube-apiserver|kube-controller-manager|etcd [flags]")
	os.Exit(2)
}
