// The host state kube-testenv --node records before the node starts and restores after.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"k8s.io/klog/v2"
)

// Sysctls a kubelet, kube-proxy or CNI plugin may write (paths under /proc/sys).
var watchedSysctls = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv4/conf/all/route_localnet",
	"net/ipv6/conf/all/forwarding", "net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables", "net/netfilter/nf_conntrack_max",
}

// Directories a kubelet, containerd or CNI create on a host by default.
var watchedPaths = []string{
	"/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/usr/libexec/kubernetes",
	"/var/lib/cni", "/etc/cni", "/opt/cni", "/run/netns", "/var/lib/containerd",
	"/run/containerd", "/opt/containerd", "/etc/kubernetes", "/run/kubernetes",
	"/var/run/kubernetes", "/run/calico", "/var/lib/dockershim",
}

type hostState struct {
	Sysctls  map[string]string `json:"sysctls"`  // absent: ""
	Iptables map[string]string `json:"iptables"` // iptables-save / ip6tables-save, counters zeroed
	Mounts   []string          `json:"mounts"`   // mount points of this mount namespace
	Paths    map[string]bool   `json:"paths"`    // exists?
	Cgroups  []string          `json:"cgroups"`  // top-level directories of every hierarchy
	Links    []string          `json:"links"`
	Routes   []string          `json:"routes"`
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

func captureHost(cgroupRoot string) *hostState {
	s := &hostState{Sysctls: map[string]string{}, Iptables: map[string]string{}, Paths: map[string]bool{}}
	for _, k := range watchedSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err == nil {
			s.Sysctls[k] = strings.TrimSpace(string(b))
		} else {
			s.Sysctls[k] = ""
		}
	}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			continue
		}
		out, err := exec.Command(tool).Output()
		if err != nil {
			s.Iptables[tool] = "error: " + err.Error()
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
				continue
			}
			lines = append(lines, counters.ReplaceAllString(l, "[0:0]"))
		}
		s.Iptables[tool] = strings.Join(lines, "\n")
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fields := strings.Fields(sc.Text()); len(fields) > 4 {
				s.Mounts = append(s.Mounts, fields[4])
			}
		}
		f.Close()
		sort.Strings(s.Mounts)
	}
	for _, p := range watchedPaths {
		_, err := os.Lstat(p)
		s.Paths[p] = err == nil
	}
	for _, h := range cgroupHierarchies() {
		entries, _ := os.ReadDir(h)
		for _, e := range entries {
			if e.IsDir() {
				s.Cgroups = append(s.Cgroups, filepath.Join(h, e.Name()))
			}
		}
	}
	sort.Strings(s.Cgroups)
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 1 {
				s.Links = append(s.Links, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
			}
		}
		sort.Strings(s.Links)
	}
	if out, err := exec.Command("ip", "route", "show", "table", "all").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				s.Routes = append(s.Routes, l)
			}
		}
		sort.Strings(s.Routes)
	}
	return s
}

// ours says whether a mount point, cgroup, link or route may have come from the node (the
// rest of the machine is shared with other programs, whose changes are none of ours).
func oursMount(mp, dataDir string) bool {
	if strings.HasPrefix(mp, dataDir+"/") || mp == dataDir || strings.HasPrefix(mp, "/proc/sys") {
		return true
	}
	for _, p := range watchedPaths {
		if mp == p || strings.HasPrefix(mp, p+"/") {
			return true
		}
	}
	return strings.HasPrefix(mp, "/sys/fs/cgroup") || strings.HasPrefix(mp, "/var/log") || strings.HasPrefix(mp, "/run/")
}

func oursCgroup(c, cgroupRoot string) bool {
	base := filepath.Base(c)
	return "/"+base == cgroupRoot || strings.HasPrefix(base, "kubepods") || strings.HasPrefix(base, "tessera-node-") ||
		base == "kubelet" || base == "kube-proxy"
}

func oursLink(l string) bool {
	return l == hostVeth || l == "cni0" || strings.HasPrefix(l, "kube-") || strings.HasPrefix(l, "veth")
}

func oursRoute(r string) bool {
	return strings.Contains(r, hostVeth) || strings.Contains(r, "10.88.") || strings.Contains(r, "cni0")
}

func setOf(xs []string) map[string]bool {
	m := map[string]bool{}
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// restoreHost puts back whatever differs from before and is the node's doing.
func restoreHost(before *hostState, cgroupRoot, dataDir string) {
	now := captureHost(cgroupRoot)
	for k, v := range before.Sysctls {
		if v != "" && now.Sysctls[k] != v {
			klog.InfoS("restoring sysctl", "name", k, "from", now.Sysctls[k], "to", v)
			_ = os.WriteFile("/proc/sys/"+k, []byte(v+"\n"), 0o644)
		}
	}
	for tool, v := range before.Iptables {
		if now.Iptables[tool] != v && !strings.HasPrefix(v, "error") {
			restore := strings.Replace(tool, "-save", "-restore", 1)
			klog.InfoS("restoring iptables", "tool", restore)
			cmd := exec.Command(restore)
			// The stored rules lack only the comment lines, which restore does not need.
			cmd.Stdin = bytes.NewReader([]byte(v + "\n"))
			if b, err := cmd.CombinedOutput(); err != nil {
				klog.InfoS("iptables restore failed", "err", err, "out", string(b))
			}
		}
	}
	was := setOf(before.Mounts)
	var extra []string
	for _, m := range now.Mounts {
		if !was[m] && oursMount(m, dataDir) {
			extra = append(extra, m)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(extra)))
	for _, m := range extra {
		klog.InfoS("unmounting", "path", m)
		_ = exec.Command("umount", "-l", m).Run()
	}
	for p, existed := range before.Paths {
		if !existed && now.Paths[p] {
			klog.InfoS("removing", "path", p)
			_ = os.RemoveAll(p)
		}
	}
	wasCg := setOf(before.Cgroups)
	for _, c := range now.Cgroups {
		if !wasCg[c] && oursCgroup(c, cgroupRoot) {
			removeCgroupTree(c)
		}
	}
	for _, h := range cgroupHierarchies() {
		removeCgroupTree(filepath.Join(h, cgroupRoot))
	}
	wasLink := setOf(before.Links)
	for _, l := range now.Links {
		if !wasLink[l] && oursLink(l) {
			_ = exec.Command("ip", "link", "del", l).Run()
		}
	}
}

// removeCgroupTree removes a cgroup directory and its children, deepest first (cgroupfs
// removes a directory with rmdir once it has no processes and no children).
func removeCgroupTree(dir string) {
	if _, err := os.Stat(dir); err != nil {
		return
	}
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !os.IsNotExist(err) {
			klog.InfoS("cgroup not removed", "path", dirs[i], "err", err)
		}
	}
}

// compareHost lists what still differs and is the node's doing.
func compareHost(before, after *hostState, cgroupRoot string) []string {
	var d []string
	for k, v := range before.Sysctls {
		if v != "" && after.Sysctls[k] != v {
			d = append(d, fmt.Sprintf("sysctl %s: %s before, %s after", k, v, after.Sysctls[k]))
		}
	}
	for tool, v := range before.Iptables {
		if after.Iptables[tool] != v {
			d = append(d, fmt.Sprintf("%s differs:\n--- before\n%s\n--- after\n%s", tool, v, after.Iptables[tool]))
		}
	}
	for tool := range after.Iptables {
		if _, ok := before.Iptables[tool]; !ok {
			d = append(d, tool+" appeared")
		}
	}
	was := setOf(before.Mounts)
	for _, m := range after.Mounts {
		if !was[m] && (oursMount(m, "/nonexistent") || strings.Contains(m, "/node/")) {
			d = append(d, "mount left: "+m)
		}
	}
	for p, existed := range before.Paths {
		if existed != after.Paths[p] {
			d = append(d, fmt.Sprintf("path %s: existed %v before, %v after", p, existed, after.Paths[p]))
		}
	}
	wasCg := setOf(before.Cgroups)
	for _, c := range after.Cgroups {
		if !wasCg[c] && oursCgroup(c, cgroupRoot) {
			d = append(d, "cgroup left: "+c)
		}
	}
	wasLink := setOf(before.Links)
	for _, l := range after.Links {
		if !wasLink[l] && oursLink(l) {
			d = append(d, "link left: "+l)
		}
	}
	wasRoute := setOf(before.Routes)
	for _, r := range after.Routes {
		if !wasRoute[r] && oursRoute(r) {
			d = append(d, "route left: "+r)
		}
	}
	sort.Strings(d)
	return d
}
