"""`python -m deploy.cluster --replicas N --port P [server flags]`: N replicas behind nginx on one host.

nginx listens on HOST:P; replica i (1..N) on 127.0.0.1:P+i, all with the same LLAMA_SERVER_*
settings and the same model file (resolved once here). The launcher watches every replica:
it puts one in nginx's upstream lists only once its /api/health answers 200 (a replica still
loading its model gets no traffic), takes it out when it stops answering, and starts a
replica that died again after a back-off. SIGINT or SIGTERM drains and stops everything:
nginx first (SIGQUIT: it finishes the requests it has), then the replicas (SIGTERM: gunicorn
lets answers finish), SIGKILL for whatever is left after REQUEST_TIMEOUT + 20 s; a second
signal stops everything at once. The run directory holds the nginx configuration, the logs
and state.json (each replica's port, pid and readiness).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from deploy import nginx_conf, nginx_reload
from deploy.replica import Replica, start_process
from server.__main__ import settings_environ
from server.model.files import ModelFileError, resolve_model
from server.settings import Settings, SettingsError, env_name, physical_cores

NGINX = "/usr/sbin/nginx"  # Debian's package: apt-get install nginx
POLL_S = 0.5
DRAIN_MARGIN_S = 20


class Cluster:
    def __init__(self, replicas: int, settings: Settings, env: dict[str, str], run_dir: Path, nginx: str):
        self.settings, self.run_dir, self.nginx_path = settings, run_dir, nginx
        self.listen = f"{settings.host}:{settings.port}"
        self.replicas = [
            Replica(i, settings.port + i, env, run_dir / f"replica-{i}.log") for i in range(1, replicas + 1)
        ]
        self.nginx = None
        self.stopping = False

    def log(self, message: str) -> None:
        print(f"cluster: {message}", flush=True)

    def write_conf(self) -> None:
        ready = [r.port for r in self.replicas if r.ready]
        text = nginx_conf.render(
            self.listen,
            self.run_dir,
            ready,
            [r.port for r in self.replicas],
            self.settings.request_timeout,
            self.settings.max_body_bytes,
        )
        nginx_conf.write(self.run_dir / "nginx.conf", text)

    def write_state(self) -> None:
        state = {
            "listen": self.listen,
            "nginx_pid": self.nginx.pid if self.nginx else None,
            "replicas": [r.state() for r in self.replicas],
        }
        partial = self.run_dir / "state.json.partial"
        partial.write_text(json.dumps(state, indent=1))
        os.replace(partial, self.run_dir / "state.json")

    def start(self) -> None:
        self.write_conf()
        command = [
            self.nginx_path,
            "-p",
            str(self.run_dir),
            "-c",
            str(self.run_dir / "nginx.conf"),
            "-e",
            str(self.run_dir / "nginx-error.log"),
        ]
        self.nginx = start_process(command, dict(os.environ), self.run_dir / "nginx.log")
        for replica in self.replicas:
            replica.start()
        self.write_state()
        first, last = self.replicas[0].port, self.replicas[-1].port
        self.log(
            f"nginx on http://{self.listen}, replicas on 127.0.0.1:{first}..{last} loading; logs in {self.run_dir}"
        )

    def step(self) -> None:
        """One round of watching: restart dead replicas, probe live ones, reload nginx on a change."""
        now, reload, changed = time.monotonic(), False, False
        for r in self.replicas:
            if r.proc is None:  # dead, waiting out its back-off
                if now >= r.next_start:
                    r.start()
                    self.log(f"replica {r.index} started again (pid {r.proc.pid})")
                    changed = True
                continue
            status = r.exited()
            if status is not None:
                reload |= r.ready
                r.died(now)
                self.log(
                    f"replica {r.index} exited with status {status}: out of rotation, starting again in "
                    f"{r.next_start - now:.0f} s (log: {r.log_path})"
                )
                changed = True
            elif r.check():
                reload = changed = True
                self.log(
                    f"replica {r.index} (127.0.0.1:{r.port}) "
                    + ("ready: in rotation" if r.ready else "not answering: out of rotation")
                )
        if reload:
            self.write_conf()
            # New workers take the new lists, old ones finish their answers; "ready" is written
            # below only once the old lists no longer take requests.
            if not nginx_reload.reload(self.nginx):
                self.log("nginx did not take the new replica lists within 10 s; see nginx-error.log")
        if changed:
            self.write_state()

    def run(self) -> int:
        """Watch until a signal asks to stop (0) or nginx dies (1); then drain and stop everything."""
        self.start()
        announced = False
        while not self.stopping and self.nginx.poll() is None:
            self.step()
            if not announced and all(r.ready for r in self.replicas):
                announced = True
                self.log(f"all {len(self.replicas)} replicas ready: http://{self.listen}")
            time.sleep(POLL_S)
        failed = not self.stopping
        if failed:
            errors = (self.run_dir / "nginx-error.log").read_text().strip().splitlines()[-5:]
            self.log(f"nginx exited with status {self.nginx.returncode}:\n" + "\n".join(errors))
        self.shutdown()
        return 1 if failed else 0

    def shutdown(self) -> None:
        self.stopping = True
        deadline = time.monotonic() + self.settings.request_timeout + DRAIN_MARGIN_S
        self.log("draining: nginx finishes its requests, then the replicas stop")
        if self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)
            _wait(self.nginx, deadline)
        for r in self.replicas:
            r.signal(signal.SIGTERM)
        for r in self.replicas:
            if r.proc is not None:
                _wait(r.proc, deadline)
        self.kill_all()
        self.log("stopped")

    def kill_all(self) -> None:
        """SIGKILL whatever is left: nginx and every replica's whole process group."""
        if self.nginx is not None and self.nginx.poll() is None:
            os.killpg(self.nginx.pid, signal.SIGKILL)
            self.nginx.wait()
        for r in self.replicas:
            r.kill_group()

    def on_signal(self, signum, _frame) -> None:
        if self.stopping:  # a second Ctrl-C: stop now
            self.log("stopping now")
            self.kill_all()
            sys.exit(130)
        self.log(f"{signal.Signals(signum).name}: stopping")
        self.stopping = True


def _wait(proc, deadline: float) -> None:
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.cluster",
        description="N replicas of the server behind nginx on one host.",
        epilog="Every other flag (--port, --host, --model, --n-threads, ...) is a server setting, as for "
        "`python -m server`; nginx listens on --host/--port, replica i on 127.0.0.1:port+i.",
    )
    parser.add_argument("--replicas", type=int, default=2, help="how many replicas (default 2)")
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="where the nginx configuration, logs and state.json go (default: a temporary directory, removed at exit)",
    )
    parser.add_argument("--nginx", default=NGINX, help=f"the nginx binary (default {NGINX})")
    return parser.parse_known_args(argv)


def replica_environ(server_args: list[str], replicas: int) -> tuple[Settings, dict[str, str]]:
    """The settings every replica gets: the flags laid over LLAMA_SERVER_*, one model file, loopback,
    and, unless N_THREADS is set, the physical cores shared out (replicas x threads <= cores)."""
    environ = settings_environ(server_args, dict(os.environ))
    settings = Settings.from_env(environ)
    model = resolve_model(settings.model)  # the default model is assembled once, not by N replicas at once
    environ.update({env_name("model"): str(model.path), env_name("host"): "127.0.0.1"})
    environ.setdefault(env_name("n_threads"), str(max(1, physical_cores() // replicas)))
    return settings, environ


def main(argv: list[str] | None = None) -> int:
    args, server_args = parse_args(argv)
    if args.replicas < 1:
        sys.stderr.write("cluster: --replicas must be at least 1\n")
        return 2
    if not shutil.which(args.nginx):
        sys.stderr.write(
            f"cluster: no nginx at {args.nginx}; install Debian's package (apt-get install nginx) "
            "or run `make deploy-tools` as root\n"
        )
        return 2
    try:
        settings, environ = replica_environ(server_args, args.replicas)
    except (SettingsError, ModelFileError) as exc:
        sys.stderr.write(f"cluster: cannot start: {exc}\n")
        return 2
    if settings.port + args.replicas > 65535:
        sys.stderr.write(f"cluster: ports {settings.port}..{settings.port + args.replicas} do not all exist\n")
        return 2
    temporary = args.run_dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="laptop-llama-cluster-")) if temporary else args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(args.replicas, settings, environ, run_dir, args.nginx)
    signal.signal(signal.SIGINT, cluster.on_signal)
    signal.signal(signal.SIGTERM, cluster.on_signal)
    try:
        return cluster.run()
    finally:
        cluster.kill_all()
        if temporary:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
