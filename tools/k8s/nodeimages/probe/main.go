// probe is a test workload: it prints its arguments, its hostname and its network
// namespace's IPv4 routing table (/proc/net/route), then exits 0. With the single
// argument "sleep" it sleeps until SIGTERM instead (a long-running pod).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	args := os.Args[1:]
	if len(args) == 1 && args[0] == "sleep" {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		return
	}
	host, _ := os.Hostname()
	fmt.Printf("probe: hello from %s: %s\n", host, strings.Join(args, " "))
	routes, err := os.ReadFile("/proc/net/route")
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
	fmt.Print(string(routes))
}
