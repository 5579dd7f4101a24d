// The node of kube-testenv --node: kube-scheduler, a kubelet, kube-proxy and a containerd
// with runc and a CNI bridge, so that pods really run.
//
// Layout (DATA = --data-dir, all of it removed or unmounted on exit):
//
//   - A holder process (this binary, re-executed as "__node-holder") owns a network
//     namespace and a mount namespace (mounts propagate into it from the host, never out).
//     In it: tmpfs over /run and /var/log (containerd's socket and shim sockets, the pods'
//     netns bind mounts, /var/log/containers), a tmpfs at DATA/node/rt (containerd's root
//     and state, the kubelet's root dir, the CNI IPAM state), and the kernel sysctls the
//     kubelet insists on (kernel.panic, kernel.panic_on_oops, vm.overcommit_memory) read
//     from files bind-mounted over /proc/sys, so the host's values never change.
//   - containerd, the kubelet and kube-proxy (iptables mode) run inside those namespaces
//     (nsenter): their iptables rules, ip_forward and routes are the namespace's own.
//   - The CNI bridge cni0 is 10.88.0.1/16 in the node namespace; pods get 10.88.x.y.
//     kube-testenv listens on 10.88.0.1:<API port> there and forwards to the API server on
//     the host's 127.0.0.1, so pods (and the kubelet) reach the API server at an address on
//     the bridge, and the `kubernetes` Service (10.0.0.1:443) points there.
//   - A veth pair joins the host (tessera-node0, 172.31.255.1/30) and the node namespace
//     (tnode0, 172.31.255.2/30); the host routes 10.88.0.0/16 (pods) and 10.0.0.0/16
//     (Services, DNAT by kube-proxy in the node namespace) through it. These go away
//     with the namespace.
//   - kube-scheduler runs in the host namespace (it only talks to the API server).
//
// The host's state that a kubelet is known to change (sysctls, iptables rules, mounts,
// /var/lib/kubelet and its siblings, cgroups, links and routes) is recorded before the node
// starts (DATA/node/host-before.json) and restored on exit; the result of comparing it again
// is written to DATA/node/host-check.txt ("ok", or one difference per line) and a
// difference makes kube-testenv exit with code 3.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

const (
	nodeName      = "tessera-node"
	nodeBridgeIP  = "10.88.0.1"
	podCIDR       = "10.88.0.0/16"
	serviceCIDR   = "10.0.0.0/16"
	hostVeth      = "tessera-node0"
	nodeVeth      = "tnode0"
	hostVethIP    = "172.31.255.1"
	nodeVethIP    = "172.31.255.2"
	pauseImage    = "tessera.test/pause:1"
	containerdSoc = "/run/containerd/containerd.sock" // inside the node's mount namespace
)

// The sysctls the kubelet sets when they differ (pkg/kubelet/cm: setupKernelTunables).
var kubeletSysctls = map[string]string{
	"kernel/panic":         "10",
	"kernel/panic_on_oops": "1",
	"vm/overcommit_memory": "1",
}

type node struct {
	dataDir, dir, rt, binDir string
	apiPort                  int
	cgroupRoot               string
	before                   *hostState
	holder                   *exec.Cmd
	holderStdin              io.WriteCloser
	holderMntNS              string
	procs                    []*exec.Cmd // kube-scheduler, containerd, kubelet, kube-proxy, in start order
	mu                       sync.Mutex
	forwarder                net.Listener
}

// startNode brings the node up; the returned node's stop restores the host.
func startNode(dataDir, binDir string, apiPort int, p *pki, internalKubeconfig string, client *http.Client, serverURL string, deadline time.Time) (*node, error) {
	n := &node{dataDir: dataDir, dir: filepath.Join(dataDir, "node"), binDir: binDir, apiPort: apiPort}
	n.rt = filepath.Join(n.dir, "rt")
	n.cgroupRoot = fmt.Sprintf("/tessera-node-%d", os.Getpid())
	for _, b := range []string{"kube-node", "pause"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return nil, fmt.Errorf("--node-bin-dir: %w (built by tools/kube-testenv/build-node.sh)", err)
		}
	}
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("--node needs %s on PATH (Debian: containerd runc containernetworking-plugins iptables iproute2 util-linux)", tool)
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir(), plugin)); err != nil {
			return nil, fmt.Errorf("--node needs the CNI plugin %s in %s (Debian: containernetworking-plugins)", plugin, cniBinDir())
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("--node must run as root (namespaces, cgroups, containerd)")
	}
	if out, _ := exec.Command("ip", "-4", "route", "show", podCIDR).Output(); len(bytes.TrimSpace(out)) > 0 {
		return nil, fmt.Errorf("the host already routes %s (%s): is another kube-testenv --node running?", podCIDR, strings.TrimSpace(string(out)))
	}
	if err := os.MkdirAll(n.rt, 0o755); err != nil {
		return nil, err
	}
	n.before = captureHost(n.cgroupRoot)
	if b, err := json.MarshalIndent(n.before, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(n.dir, "host-before.json"), b, 0o644)
	}
	if err := n.start(p, internalKubeconfig, client, serverURL, deadline); err != nil {
		return n, err
	}
	return n, nil
}

func cniBinDir() string {
	for _, d := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
		if _, err := os.Stat(filepath.Join(d, "bridge")); err == nil {
			return d
		}
	}
	return "/usr/lib/cni"
}

func (n *node) logFile(name string) (*os.File, error) {
	return os.OpenFile(filepath.Join(n.dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}

// spawn starts a node component, inside the node's namespaces when inNode.
func (n *node) spawn(name string, inNode bool, args ...string) (*exec.Cmd, error) {
	if inNode {
		pid := strconv.Itoa(n.holder.Process.Pid)
		args = append([]string{"--target", pid, "--mount", "--net", "--"}, args...)
		args = append([]string{"nsenter"}, args...)
	}
	log, err := n.logFile(name + ".log")
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	klog.InfoS("node component started", "name", name, "pid", cmd.Process.Pid)
	n.mu.Lock()
	n.procs = append(n.procs, cmd)
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		klog.InfoS("node component exited", "name", name, "err", err)
	}()
	return cmd, nil
}

func (n *node) start(p *pki, internalKubeconfig string, client *http.Client, serverURL string, deadline time.Time) error {
	start := time.Now()
	// Cgroup root of the kubelet, in every hierarchy (it must exist beforehand).
	for _, h := range cgroupHierarchies() {
		d := filepath.Join(h, n.cgroupRoot)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
					_ = os.WriteFile(filepath.Join(d, f), b, 0o644)
				}
			}
		}
	}

	// The namespaces.
	for name, value := range kubeletSysctls {
		f := filepath.Join(n.dir, "sysctl", strings.ReplaceAll(name, "/", "."))
		if err := writeFileAtomic(f, []byte(value+"\n"), 0o644); err != nil {
			return err
		}
	}
	holder := exec.Command("/proc/self/exe", "__node-holder", n.dir, n.rt)
	holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	hlog, err := n.logFile("holder.log")
	if err != nil {
		return err
	}
	holder.Stderr = hlog
	stdin, err := holder.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		return err
	}
	if err := holder.Start(); err != nil {
		return fmt.Errorf("node namespaces: %w", err)
	}
	hlog.Close()
	n.holder, n.holderStdin = holder, stdin
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "OK" {
		return fmt.Errorf("node namespaces: holder failed (see %s)", filepath.Join(n.dir, "holder.log"))
	}
	n.holderMntNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", holder.Process.Pid))
	pid := strconv.Itoa(holder.Process.Pid)
	for _, args := range [][]string{
		{"link", "add", hostVeth, "type", "veth", "peer", "name", nodeVeth, "netns", pid},
		{"addr", "add", hostVethIP + "/30", "dev", hostVeth},
		{"link", "set", hostVeth, "up"},
		{"route", "add", podCIDR, "via", nodeVethIP, "dev", hostVeth},
		{"route", "add", serviceCIDR, "via", nodeVethIP, "dev", hostVeth},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, args := range [][]string{
		{"addr", "add", nodeVethIP + "/30", "dev", nodeVeth},
		{"link", "set", nodeVeth, "up"},
		{"route", "add", "default", "via", hostVethIP, "dev", nodeVeth},
	} {
		full := append([]string{"--target", pid, "--net", "--", "ip"}, args...)
		if out, err := exec.Command("nsenter", full...).CombinedOutput(); err != nil {
			return fmt.Errorf("node: ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}

	// The API server at an address on the bridge.
	if n.forwarder, err = listenInNetns(fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid), fmt.Sprintf("%s:%d", nodeBridgeIP, n.apiPort)); err != nil {
		return fmt.Errorf("API forwarder: %w", err)
	}
	go forward(n.forwarder, fmt.Sprintf("127.0.0.1:%d", n.apiPort))
	nodeKubeconfig := filepath.Join(n.dir, "node.kubeconfig")
	if err := writeFileAtomic(nodeKubeconfig, p.kubeconfig(fmt.Sprintf("https://%s:%d", nodeBridgeIP, n.apiPort)), 0o600); err != nil {
		return err
	}

	// kube-scheduler, on the host.
	if _, err := n.spawn("kube-scheduler", false, filepath.Join(n.binDir, "kube-node"), "scheduler",
		"--kubeconfig="+internalKubeconfig, "--authentication-kubeconfig="+internalKubeconfig,
		"--authorization-kubeconfig="+internalKubeconfig, "--leader-elect=false", "--secure-port=0"); err != nil {
		return err
	}

	// containerd.
	if err := n.writeConfigs(p); err != nil {
		return err
	}
	if _, err := n.spawn("containerd", true, "containerd", "--config", filepath.Join(n.dir, "containerd.toml")); err != nil {
		return err
	}
	sock := n.containerdAddress()
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not listening on %s (see %s)", sock, filepath.Join(n.dir, "containerd.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	klog.InfoS("containerd ready", "elapsed", time.Since(start))
	pauseTar := filepath.Join(n.dir, "pause.tar")
	if err := writePauseImage(filepath.Join(n.binDir, "pause"), pauseTar); err != nil {
		return fmt.Errorf("pause image: %w", err)
	}
	if out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "images", "import", pauseTar).CombinedOutput(); err != nil {
		return fmt.Errorf("importing the pause image: %v: %s", err, out)
	}

	// kubelet and kube-proxy.
	if _, err := n.spawn("kubelet", true, filepath.Join(n.binDir, "kube-node"), "kubelet",
		"--config="+filepath.Join(n.dir, "kubelet.yaml"), "--kubeconfig="+nodeKubeconfig,
		"--root-dir="+filepath.Join(n.rt, "kubelet"), "--hostname-override="+nodeName,
		"--node-ip="+nodeBridgeIP, "--v=2"); err != nil {
		return err
	}
	if _, err := n.spawn("kube-proxy", true, filepath.Join(n.binDir, "kube-node"), "proxy",
		"--config="+filepath.Join(n.dir, "kube-proxy.yaml"), "--v=2"); err != nil {
		return err
	}
	if err := waitFor(client, serverURL+"/api/v1/nodes/"+nodeName, deadline); err != nil {
		return fmt.Errorf("node %s not registered (see %s): %w", nodeName, filepath.Join(n.dir, "kubelet.log"), err)
	}
	for {
		ready, why := nodeReady(client, serverURL)
		if ready {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not Ready: %s (see %s)", nodeName, why, filepath.Join(n.dir, "kubelet.log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	klog.InfoS("node ready", "elapsed", time.Since(start))
	return nil
}

// containerdAddress is containerd's socket seen from the host, through the holder's root.
func (n *node) containerdAddress() string {
	return fmt.Sprintf("/proc/%d/root%s", n.holder.Process.Pid, containerdSoc)
}

// nodeReady: Ready, and without the not-ready taint (pods would not be scheduled yet).
func nodeReady(client *http.Client, serverURL string) (bool, string) {
	resp, err := client.Get(serverURL + "/api/v1/nodes/" + nodeName)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	var obj struct {
		Spec struct {
			Taints []struct{ Key string }
		}
		Status struct {
			Conditions []struct{ Type, Status, Message string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&obj); err != nil {
		return false, err.Error()
	}
	for _, t := range obj.Spec.Taints {
		if t.Key == "node.kubernetes.io/not-ready" {
			return false, "tainted " + t.Key
		}
	}
	for _, c := range obj.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True", c.Message
		}
	}
	return false, "no Ready condition yet"
}

func (n *node) writeConfigs(p *pki) error {
	cni := filepath.Join(n.dir, "cni")
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "tessera-node",
  "plugins": [{
    "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %q, "gateway": %q}]],
             "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}
  }]
}
`, podCIDR, nodeBridgeIP, filepath.Join(n.rt, "cni-ipam"))
	if err := writeFileAtomic(filepath.Join(cni, "10-tessera-node.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	containerd := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`, filepath.Join(n.rt, "containerd"), "/run/containerd", containerdSoc, filepath.Join(n.rt, "opt"),
		pauseImage, cniBinDir(), cni)
	if err := writeFileAtomic(filepath.Join(n.dir, "containerd.toml"), []byte(containerd), 0o644); err != nil {
		return err
	}
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupRoot: %q
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
containerRuntimeEndpoint: "unix://%s"
podLogsDir: %q
volumePluginDir: %q
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
address: %q
readOnlyPort: 0
healthzBindAddress: "127.0.0.1"
healthzPort: 0
staticPodPath: ""
resolvConf: "/etc/resolv.conf"
clusterDomain: cluster.local
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%%", "imagefs.available": "1%%"}
maxPods: 60
shutdownGracePeriod: 0s
protectKernelDefaults: false
registerNode: true
nodeStatusUpdateFrequency: 2s
syncFrequency: 5s
fileCheckFrequency: 5s
`, n.cgroupRoot, containerdSoc, filepath.Join(n.dir, "pod-logs"), filepath.Join(n.rt, "volume-plugins"),
		p.caCert, nodeBridgeIP)
	if err := writeFileAtomic(filepath.Join(n.dir, "kubelet.yaml"), []byte(kubelet), 0o644); err != nil {
		return err
	}
	proxy := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
hostnameOverride: %q
mode: iptables
clusterCIDR: %q
detectLocalMode: ClusterCIDR
iptables: {masqueradeAll: true, syncPeriod: 10s, minSyncPeriod: 0s}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: "127.0.0.1:10249"
healthzBindAddress: "127.0.0.1:10256"
`, filepath.Join(n.dir, "node.kubeconfig"), nodeName, podCIDR)
	return writeFileAtomic(filepath.Join(n.dir, "kube-proxy.yaml"), []byte(proxy), 0o644)
}

// listenInNetns opens a TCP listener inside the network namespace at nsPath.
func listenInNetns(nsPath, addr string) (net.Listener, error) {
	runtime.LockOSThread()
	own, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer own.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	var l net.Listener
	for i := 0; i < 50; i++ { // the bridge address may still be tentative
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if serr := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); serr != nil {
		// This thread stays in the node namespace: let it die with its goroutine.
		return l, err
	}
	runtime.UnlockOSThread()
	return l, err
}

func forward(l net.Listener, to string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", to)
			if err != nil {
				return
			}
			defer u.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
			<-done
		}()
	}
}

// writePauseImage writes an OCI archive (as `ctr images import` takes it) of one layer
// holding the pause binary at /pause.
func writePauseImage(bin, out string) error {
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	epoch := time.Unix(0, 0)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	digest := func(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }
	layerDigest := digest(layer.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/pause"}, "User": "65535:65535"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	desc := func(mt string, b []byte) map[string]any {
		return map[string]any{"mediaType": mt, "digest": digest(b), "size": len(b)}
	}
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc("application/vnd.oci.image.config.v1+json", config),
		"layers": []any{desc("application/vnd.oci.image.layer.v1.tar", layer.Bytes())},
	})
	md := desc("application/vnd.oci.image.manifest.v1+json", manifest)
	md["annotations"] = map[string]string{"io.containerd.image.name": pauseImage, "org.opencontainers.image.ref.name": "1"}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{md}})
	var buf bytes.Buffer
	ow := tar.NewWriter(&buf)
	add := func(name string, b []byte) error {
		if err := ow.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := ow.Write(b)
		return err
	}
	blob := func(b []byte) string { return "blobs/sha256/" + strings.TrimPrefix(digest(b), "sha256:") }
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blob(manifest), manifest},
		{blob(config), config},
		{blob(layer.Bytes()), layer.Bytes()},
	} {
		if err := add(f.name, f.data); err != nil {
			return err
		}
	}
	if err := ow.Close(); err != nil {
		return err
	}
	return writeFileAtomic(out, buf.Bytes(), 0o644)
}

// stop ends every node process and restores the host; it returns the differences left.
func (n *node) stop() []string {
	t0 := time.Now()
	n.mu.Lock()
	procs := append([]*exec.Cmd(nil), n.procs...)
	n.mu.Unlock()
	// kube-proxy, kubelet, then the others (reverse start order), SIGTERM then SIGKILL.
	for i := len(procs) - 1; i >= 0; i-- {
		c := procs[i]
		if c.Process == nil || filepath.Base(c.Path) == "containerd" {
			continue
		}
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	time.Sleep(300 * time.Millisecond)
	// Every process of the pods (containers, pause, their children) is in our cgroup root.
	for attempt := 0; attempt < 50; attempt++ {
		if killCgroupProcs(n.cgroupRoot) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Then everything left in the node's mount namespace (shims, containerd, kubelet,
	// kube-proxy, the holder last).
	for attempt := 0; attempt < 50 && n.holderMntNS != ""; attempt++ {
		if killInMountNS(n.holderMntNS, n.holder.Process.Pid) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range procs {
		if c.Process != nil {
			_ = c.Process.Kill()
		}
	}
	if n.forwarder != nil {
		n.forwarder.Close()
	}
	if n.holder != nil && n.holder.Process != nil {
		if n.holderStdin != nil {
			n.holderStdin.Close()
		}
		done := make(chan struct{})
		go func() { _ = n.holder.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			_ = n.holder.Process.Kill()
			<-done
		}
	}
	// The namespaces die with their last process; the veth pair goes with the network
	// namespace, a moment later.
	for i := 0; i < 100; i++ {
		if _, err := net.InterfaceByName(hostVeth); err != nil {
			break
		}
		if i == 99 {
			_ = exec.Command("ip", "link", "del", hostVeth).Run()
		}
		time.Sleep(50 * time.Millisecond)
	}
	klog.InfoS("node processes stopped", "elapsed", time.Since(t0))
	if n.before == nil {
		return nil
	}
	restoreHost(n.before, n.cgroupRoot, n.dataDir)
	after := captureHost(n.cgroupRoot)
	diffs := compareHost(n.before, after, n.cgroupRoot)
	if b, err := json.MarshalIndent(after, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(n.dir, "host-after.json"), b, 0o644)
	}
	report := "ok\n"
	if len(diffs) > 0 {
		report = strings.Join(diffs, "\n") + "\n"
	}
	_ = os.WriteFile(filepath.Join(n.dir, "host-check.txt"), []byte(report), 0o644)
	klog.InfoS("host restored", "differences", len(diffs), "elapsed", time.Since(t0))
	return diffs
}

// killCgroupProcs SIGKILLs every process under root in every hierarchy; returns how many.
func killCgroupProcs(root string) int {
	killed := 0
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					_ = unix.Kill(pid, unix.SIGKILL)
					killed++
				}
			}
			return nil
		})
	}
	return killed
}

// killInMountNS SIGKILLs every process whose mount namespace is mntNS, the holder last.
func killInMountNS(mntNS string, holderPid int) int {
	entries, _ := os.ReadDir("/proc")
	killed, holderAlive := 0, false
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); ns == mntNS {
			if pid == holderPid {
				holderAlive = true
				continue
			}
			_ = unix.Kill(pid, unix.SIGKILL)
			killed++
		}
	}
	if killed == 0 && holderAlive {
		return 0 // the holder ends when we close its stdin
	}
	return killed
}

func cgroupHierarchies() []string {
	var out []string
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		// ... mountpoint(4) ... " - " fstype source options
		for i, x := range fields {
			if x == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				out = append(out, fields[4])
			}
		}
	}
	sort.Strings(out)
	return out
}

// nodeHolder is the body of the "__node-holder" process: it prepares the node's mount
// and network namespaces (which it was started in), says OK and waits for stdin to close.
func nodeHolder(dir, rt string) {
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "node holder: %v\n", err)
		os.Exit(1)
	}
	// Mounts made here never propagate to the host; the host's still reach us.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		fail(fmt.Errorf("making / a slave mount: %w", err))
	}
	for _, m := range []struct{ target, opts string }{
		{"/run", "mode=755,size=256m"},
		{"/var/log", "mode=755,size=256m"},
		{rt, "mode=755,size=8g"},
	} {
		if err := unix.Mount("tmpfs", m.target, "tmpfs", 0, m.opts); err != nil {
			fail(fmt.Errorf("tmpfs on %s: %w", m.target, err))
		}
	}
	for name := range kubeletSysctls {
		src := filepath.Join(dir, "sysctl", strings.ReplaceAll(name, "/", "."))
		if err := unix.Mount(src, "/proc/sys/"+name, "", unix.MS_BIND, ""); err != nil {
			fail(fmt.Errorf("masking /proc/sys/%s: %w", name, err))
		}
	}
	for _, d := range []string{"/run/containerd", "/run/netns", "/var/log/containers", "/var/log/pods"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			fail(err)
		}
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		fail(fmt.Errorf("ip_forward in the node namespace: %w", err))
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "cni0", "type", "bridge"},
		{"addr", "add", nodeBridgeIP + "/16", "dev", "cni0"},
		{"link", "set", "cni0", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fail(fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out))
		}
	}
	fmt.Println("OK")
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}
