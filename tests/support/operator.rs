//! Runs `tessera operator` as a child process against the test control plane, scoped to the
//! test's namespaces; killed when dropped.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

pub struct OperatorProcess {
    child: Child,
}

impl OperatorProcess {
    pub fn start(kubeconfig: &Path, namespaces: &[&str], log: &Path) -> Self {
        Self::start_with(kubeconfig, namespaces, log, &["--listen", "127.0.0.1:0"])
    }

    pub fn start_with(kubeconfig: &Path, namespaces: &[&str], log: &Path, extra: &[&str]) -> Self {
        Self::start_env(kubeconfig, namespaces, log, extra, &[])
    }

    pub fn start_env(kubeconfig: &Path, namespaces: &[&str], log: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.arg("operator").arg("--kubeconfig").arg(kubeconfig).args(extra);
        cmd.args(["--issuer-image", "tessera:test"]);
        for ns in namespaces {
            cmd.args(["--namespace", ns]);
        }
        let log = std::fs::File::create(log).unwrap();
        cmd.envs(env.iter().copied());
        let child = cmd.env("RUST_LOG", "info,tessera=debug").stdout(Stdio::null()).stderr(log).spawn().unwrap();
        Self { child }
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit code if it did.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }

    /// Sends `signal` (`TERM`, `INT`, ...) to the operator.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(sent.success(), "kill -{signal} {}", self.child.id());
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
