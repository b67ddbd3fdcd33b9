// probe is a test workload. By default it prints its arguments, its hostname and its
// network namespace's IPv4 routing table (/proc/net/route), then exits 0. Other modes:
//
//	probe sleep              sleep until SIGTERM (a long-running pod)
//	probe resolve NAME...    look the names up (the pod's resolv.conf), print the addresses
//	probe connect HOST:PORT  open a TCP connection (5 s timeout) and close it
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "probe:", err)
	os.Exit(1)
}

func main() {
	args := os.Args[1:]
	switch {
	case len(args) == 1 && args[0] == "sleep":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		return
	case len(args) > 1 && args[0] == "resolve":
		for _, name := range args[1:] {
			addrs, err := net.LookupHost(name)
			if err != nil {
				fail(err)
			}
			fmt.Printf("%s %s\n", name, strings.Join(addrs, " "))
		}
		return
	case len(args) == 2 && args[0] == "connect":
		conn, err := net.DialTimeout("tcp", args[1], 5*time.Second)
		if err != nil {
			fail(err)
		}
		fmt.Printf("connected to %s from %s\n", conn.RemoteAddr(), conn.LocalAddr())
		conn.Close()
		return
	}
	host, _ := os.Hostname()
	fmt.Printf("probe: hello from %s: %s\n", host, strings.Join(args, " "))
	routes, err := os.ReadFile("/proc/net/route")
	if err != nil {
		fail(err)
	}
	fmt.Print(string(routes))
}
