// kube-testenv runs a small Kubernetes control plane in one process, for
// integration tests: embedded etcd, kube-apiserver and kube-controller-manager
// (k8s 1.36, etcd 3.7). Without --node there is no kubelet and no scheduler: pods
// stay Pending. With --node (node.go) pods run: kube-scheduler, a kubelet, kube-proxy and
// a containerd of its own, in network and mount namespaces of their own.
//
// Usage:
//
//	kube-testenv --data-dir DIR [--kubeconfig PATH] [--apiserver-arg=--flag=value ...]
//	             [--log-file PATH|-] [--v N] [--exit-on-stdin-eof=true] [--startup-timeout 2m]
//	             [--node --node-bin-dir DIR]
//
// Everything lives in DIR (one kube-testenv per DIR): pki/ (CA, serving, admin
// and service-account keys), etcd-*/ (removed on exit), testenv.log (all
// component logs), kubeconfig (default --kubeconfig). When the control plane is
// ready it writes the admin kubeconfig (atomically) and prints one line on stdout:
//
//	READY <kubeconfig path> <https://127.0.0.1:port>
//
// With --node it first prints
//
//	NODE <node name> <containerd socket, as the host reaches it> <DATA-DIR/node>
//
// The service-account issuer is that same https://127.0.0.1:port.
// It exits with code 0 on SIGTERM, SIGINT, or when stdin reaches EOF (the
// parent holds a pipe to our stdin; when the parent dies, we go too), and with
// code 1 if a component fails; with --node, code 3 if the host's state could not be
// restored (DATA-DIR/node/host-check.txt lists what differs).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/sys/unix"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	cmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	cmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
)

// controllers run by the in-process kube-controller-manager.
var controllers = []string{
	"garbage-collector-controller",
	"namespace-controller",
	"deployment-controller",
	"replicaset-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
	"disruption-controller",
}

// nodeControllers run as well with --node: Services get their EndpointSlices.
var nodeControllers = []string{
	"endpoints-controller",
	"endpointslice-controller",
	"endpointslice-mirroring-controller",
	"pod-garbage-collector-controller",
	"node-lifecycle-controller", // lifts the not-ready taint the kubelet registers with
}

// stderr is the original standard error, for our own messages.
var stderr = os.Stderr

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type options struct {
	dataDir      string
	kubeconfig   string
	logFile      string
	verbosity    int
	watchStdin   bool
	timeout      time.Duration
	apiserverArg stringList
	node         bool
	nodeBinDir   string
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == "__node-holder" {
		nodeHolder(os.Args[2], os.Args[3])
	}
	var o options
	fs := flag.NewFlagSet("kube-testenv", flag.ContinueOnError)
	fs.StringVar(&o.dataDir, "data-dir", "", "directory for all state: certificates, etcd data, logs, kubeconfig (required)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "where to write the admin kubeconfig (default DATA-DIR/kubeconfig)")
	fs.StringVar(&o.logFile, "log-file", "", "where component logs go (default DATA-DIR/testenv.log; '-' for stderr)")
	fs.IntVar(&o.verbosity, "v", 0, "klog verbosity of kube-apiserver and kube-controller-manager")
	fs.BoolVar(&o.watchStdin, "exit-on-stdin-eof", true, "exit when stdin reaches EOF")
	fs.DurationVar(&o.timeout, "startup-timeout", 2*time.Minute, "give up if not ready within this time")
	fs.BoolVar(&o.node, "node", false, "also run a node: kube-scheduler, kubelet, kube-proxy, containerd (root; see node.go)")
	fs.StringVar(&o.nodeBinDir, "node-bin-dir", "", "with --node: the directory tools/kube-testenv/build-node.sh printed")
	fs.Var(&o.apiserverArg, "apiserver-arg", "extra kube-apiserver flag, e.g. --apiserver-arg=--authentication-config=/path (repeatable)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if o.dataDir == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "kube-testenv: --data-dir is required and no positional arguments are accepted")
		fs.Usage()
		os.Exit(2)
	}
	if err := run(&o); err != nil {
		fmt.Fprintf(stderr, "kube-testenv: %v\n", err)
		os.Exit(1)
	}
}

// shutdown is the single exit path once etcd has started.
type shutdown struct {
	once       sync.Once
	cancel     context.CancelFunc // stops kube-apiserver and kube-controller-manager
	apiStarted atomic.Bool
	apiDone    chan struct{} // closed when kube-apiserver's Run has returned
	stopping   atomic.Bool

	mu     sync.Mutex
	etcd   *embed.Etcd
	etcdWD string
	node   *node
}

func (s *shutdown) setEtcd(e *embed.Etcd) { s.mu.Lock(); s.etcd = e; s.mu.Unlock() }
func (s *shutdown) setEtcdDir(d string)   { s.mu.Lock(); s.etcdWD = d; s.mu.Unlock() }

func (s *shutdown) exit(code int, reason string) {
	s.once.Do(func() {
		s.stopping.Store(true)
		klog.InfoS("kube-testenv shutting down", "reason", reason)
		fmt.Fprintf(stderr, "kube-testenv: stopping (%s)\n", reason)
		t0 := time.Now()
		// The node first: its processes end and the host is restored while the API
		// server still answers.
		s.mu.Lock()
		n := s.node
		s.mu.Unlock()
		if n != nil {
			if diffs := n.stop(); len(diffs) > 0 {
				fmt.Fprintf(stderr, "kube-testenv: the host's state was not restored (%s):\n%s\n",
					filepath.Join(n.dir, "host-check.txt"), strings.Join(diffs, "\n"))
				code = 3
			}
		}
		// Stop kube-apiserver first: etcd's Close waits for open watch
		// streams, and the apiserver's are closed when it shuts down.
		s.cancel()
		if s.apiStarted.Load() {
			select {
			case <-s.apiDone:
				klog.InfoS("kube-apiserver stopped", "elapsed", time.Since(t0))
			case <-time.After(3 * time.Second):
				klog.InfoS("kube-apiserver did not stop within 3s")
			}
		}
		s.mu.Lock()
		etcd, etcdWD := s.etcd, s.etcdWD
		s.mu.Unlock()
		if etcd != nil {
			done := make(chan struct{})
			go func() { etcd.Close(); close(done) }()
			select {
			case <-done:
				klog.InfoS("etcd stopped", "elapsed", time.Since(t0))
			case <-time.After(3 * time.Second):
				fmt.Fprintln(stderr, "kube-testenv: etcd did not stop within 3s")
			}
		}
		if etcdWD != "" {
			_ = os.RemoveAll(etcdWD)
		}
		klog.InfoS("kube-testenv exiting", "code", code, "elapsed", time.Since(t0))
		klog.Flush()
		os.Exit(code)
	})
	select {} // another goroutine is exiting
}

func run(o *options) error {
	start := time.Now()
	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	if o.kubeconfig == "" {
		o.kubeconfig = filepath.Join(dataDir, "kubeconfig")
	}
	if o.kubeconfig, err = filepath.Abs(o.kubeconfig); err != nil {
		return err
	}
	if o.logFile == "" {
		o.logFile = filepath.Join(dataDir, "testenv.log")
	}
	if err := setupLogs(o.logFile, o.verbosity); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	sd := &shutdown{cancel: cancel, apiDone: make(chan struct{})}

	// Exit triggers: signals and stdin EOF.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		sd.exit(0, "signal "+s.String())
	}()
	if o.watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			sd.exit(0, "stdin closed")
		}()
	}

	// The API server's listener is opened now and handed over, so its port
	// cannot be taken by someone else in between.
	apiListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	apiPort := apiListener.Addr().(*net.TCPAddr).Port
	serverURL := fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	// Certificates and keys.
	pkiDir := filepath.Join(dataDir, "pki")
	p, err := writePKI(pkiDir)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	kubeconfigData := p.kubeconfig(serverURL)
	internalKubeconfig := filepath.Join(pkiDir, "admin.kubeconfig")
	if err := writeFileAtomic(internalKubeconfig, kubeconfigData, 0o600); err != nil {
		return err
	}

	// etcd, in a fresh directory; directories left by killed runs are removed
	// (one kube-testenv per data dir).
	if old, _ := filepath.Glob(filepath.Join(dataDir, "etcd-*")); len(old) > 0 {
		for _, d := range old {
			_ = os.RemoveAll(d)
		}
	}
	etcdDir, err := os.MkdirTemp(dataDir, "etcd-")
	if err != nil {
		return err
	}
	sd.setEtcdDir(etcdDir)
	var etcd *embed.Etcd
	var etcdClientPort int
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return err
		}
		etcdClientPort = ports[0]
		etcd, err = startEtcd(etcdDir, ports[0], ports[1])
		if err == nil {
			break
		}
		// Another process may have taken a port between our probe and etcd's bind.
		if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			klog.InfoS("etcd port taken, retrying", "err", err)
			_ = os.RemoveAll(etcdDir)
			_ = os.MkdirAll(etcdDir, 0o700)
			continue
		}
		_ = os.RemoveAll(etcdDir)
		return fmt.Errorf("etcd: %w", err)
	}
	sd.setEtcd(etcd)
	klog.InfoS("etcd ready", "elapsed", time.Since(start))
	fail := func(err error) {
		if sd.stopping.Load() {
			select {} // expected during shutdown
		}
		fmt.Fprintf(stderr, "kube-testenv: %v (logs: %s)\n", err, o.logFile)
		sd.exit(1, "error")
	}
	go func() {
		select {
		case err := <-etcd.Err():
			fail(fmt.Errorf("etcd: %w", err))
		case <-etcd.Server.StopNotify():
		}
	}()

	rest.SetDefaultWarningHandler(rest.NoWarnings{})

	// kube-apiserver.
	issuer := serverURL
	advertise := "127.0.0.1"
	if o.node {
		// Pods reach the API server on the node bridge (node.go forwards it there).
		advertise = nodeBridgeIP
	}
	apiArgs := []string{
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", etcdClientPort),
		"--cert-dir=" + filepath.Join(dataDir, "apiserver-certs"),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caCert,
		"--secure-port=" + strconv.Itoa(apiPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=" + advertise,
		"--service-cluster-ip-range=10.0.0.0/16", // room for thousands of Services (benches/control_plane)
		"--allow-privileged=true",
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + issuer,
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--api-audiences=" + issuer,
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
	apiArgs = append(apiArgs, o.apiserverArg...)
	apiErr := make(chan error, 1)
	if err := startAPIServer(ctx, apiArgs, apiListener, o.verbosity, &sd.apiStarted, apiErr); err != nil {
		fail(fmt.Errorf("kube-apiserver: %w", err))
	}
	go func() {
		err := <-apiErr
		close(sd.apiDone)
		if err == nil {
			err = errors.New("stopped")
		}
		fail(fmt.Errorf("kube-apiserver: %w", err))
	}()

	client, err := p.httpClient()
	if err != nil {
		fail(err)
	}
	deadline := time.Now().Add(o.timeout)
	if err := waitFor(client, serverURL+"/readyz", deadline); err != nil {
		fail(fmt.Errorf("kube-apiserver not ready: %w", err))
	}
	klog.InfoS("kube-apiserver ready", "elapsed", time.Since(start))

	// kube-controller-manager.
	cms := controllers
	if o.node {
		cms = append(append([]string(nil), controllers...), nodeControllers...)
	}
	cmArgs := []string{
		"--kubeconfig=" + internalKubeconfig,
		"--controllers=" + strings.Join(cms, ","),
		"--service-account-private-key-file=" + p.saKey,
		"--root-ca-file=" + p.caCert,
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--secure-port=0",
		"--concurrent-gc-syncs=5",
		"--namespace-sync-period=10s",
	}
	cmErr := make(chan error, 1)
	if err := startControllerManager(ctx, cmArgs, cmErr); err != nil {
		fail(fmt.Errorf("kube-controller-manager: %w", err))
	}
	go func() {
		err := <-cmErr
		if err == nil {
			err = errors.New("stopped")
		}
		fail(fmt.Errorf("kube-controller-manager: %w", err))
	}()
	// The serviceaccount controller creating default/default proves that the
	// controller manager is up and its controllers are running.
	if err := waitFor(client, serverURL+"/api/v1/namespaces/default/serviceaccounts/default", deadline); err != nil {
		fail(fmt.Errorf("kube-controller-manager not running: %w", err))
	}
	klog.InfoS("kube-controller-manager running", "elapsed", time.Since(start))

	if o.node {
		n, err := startNode(dataDir, o.nodeBinDir, apiPort, p, internalKubeconfig, client, serverURL, deadline.Add(2*time.Minute))
		if n != nil {
			sd.mu.Lock()
			sd.node = n
			sd.mu.Unlock()
		}
		if err != nil {
			fail(fmt.Errorf("node: %w", err))
		}
		fmt.Fprintf(os.Stdout, "NODE %s %s %s\n", nodeName, n.containerdAddress(), n.dir)
	}

	if err := writeFileAtomic(o.kubeconfig, kubeconfigData, 0o600); err != nil {
		fail(err)
	}
	fmt.Fprintf(os.Stdout, "READY %s %s\n", o.kubeconfig, serverURL)
	fmt.Fprintf(stderr, "kube-testenv: ready in %s (logs: %s)\n", time.Since(start).Round(time.Millisecond), o.logFile)
	select {}
}

// setupLogs sends everything the components log (klog, the etcd server's and
// the etcd client's zap loggers, Go runtime panics) to logFile by pointing
// file descriptor 2 at it. Our own few messages go to the original stderr.
func setupLogs(logFile string, v int) error {
	kfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(kfs)
	if err := kfs.Set("v", strconv.Itoa(v)); err != nil {
		return err
	}
	if logFile == "-" {
		return nil
	}
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	orig, err := unix.Dup(2)
	if err != nil {
		return err
	}
	unix.CloseOnExec(orig)
	if err := unix.Dup3(int(f.Fd()), 2, 0); err != nil {
		return err
	}
	f.Close()
	stderr = os.NewFile(uintptr(orig), "stderr")
	return nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func startEtcd(dir string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "kube-testenv"
	cfg.Dir = dir
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = true
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{"stderr"}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("not ready after 60s")
	}
}

// startAPIServer does what kube-apiserver's cobra command does, minus its
// process-wide signal handler (we own signals).
func startAPIServer(ctx context.Context, args []string, l net.Listener, v int, started *atomic.Bool, errCh chan<- error) error {
	s := apiserveroptions.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	s.SecureServing.Listener = l
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	// Logging is applied once for the whole process (a second apply is an error).
	s.Logs.Verbosity = logsapi.VerbosityLevel(v)
	if err := logsapi.ValidateAndApply(s.Logs, s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor("kube")); err != nil {
		return err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return utilerrors.NewAggregate(errs)
	}
	started.Store(true)
	go func() { errCh <- apiserverapp.Run(ctx, completed) }()
	return nil
}

// startControllerManager does what kube-controller-manager's cobra command does.
func startControllerManager(ctx context.Context, args []string, errCh chan<- error) error {
	s, err := cmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	nfs := s.Flags(cmapp.KnownControllers(), cmapp.ControllersDisabledByDefault(), cmapp.ControllerAliases())
	s.ParsedFlags = &nfs
	for _, f := range nfs.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	c, err := s.Config(ctx, cmapp.KnownControllers(), cmapp.ControllersDisabledByDefault(), cmapp.ControllerAliases())
	if err != nil {
		return err
	}
	go func() { errCh <- cmapp.Run(ctx, c.Complete()) }()
	return nil
}

func waitFor(client *http.Client, u string, deadline time.Time) error {
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(u)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %d %s", u, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("timed out: %v", last)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
