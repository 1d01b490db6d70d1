#!/usr/bin/python3
"""The README, tried as a new user would: its first command, then its
examples, verbatim.

The README starts with exactly two commands (scripts/run and scripts/test).
This test runs the first one, `./scripts/run`, with a data directory of its
own, inside a network namespace made for it: the examples name the default
ports (127.0.0.1:11211 and :5672), and in a namespace of its own the node
takes them without meeting anything else on this machine. Then it runs every
line of the README's example block in the same namespace, exactly as
written, and checks what they print. (The fault lab command the README
names is run by the fault_* tests; scripts/test by CI itself.)

It also checks that the README, and every file of the repository, points at
nothing outside the repository. Needs root (network namespaces).
"""
import os
import re
import signal
import subprocess
import time

import ringmq_test as rt

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
README = os.path.join(TOP, "README.md")
NETNS = "rq-readme-%d" % os.getpid()


def code_blocks():
    """The README's ```sh blocks, each a list of its non-empty lines."""
    with open(README) as f:
        text = f.read()
    return [[ln for ln in b.splitlines() if ln.strip()]
            for b in re.findall(r"```sh\n(.*?)```", text, re.S)]


def netns(*cmd, **kw):
    return subprocess.run(["ip", "netns", "exec", NETNS] + list(cmd), **kw)


def remove_netns():
    subprocess.run(["ip", "netns", "del", NETNS], stderr=subprocess.DEVNULL)


def test_two_commands_first():
    blocks = code_blocks()
    rt.check(len(blocks) >= 2, "README has no example block after the first")
    cmds = [ln.split("#")[0].strip() for ln in blocks[0]]
    rt.check(cmds == ["./scripts/run", "./scripts/test"],
             "README's first block is not exactly the two commands: %r" % cmds)


def run_packages():
    """The packages scripts/deps installs for scripts/run (RUN_PKGS)."""
    with open(os.path.join(TOP, "scripts", "deps")) as f:
        m = re.search(r'^RUN_PKGS="([^"]*)"', f.read(), re.M)
    rt.check(m is not None, "scripts/deps has no RUN_PKGS")
    return set(m.group(1).split())


def test_first_command_installs_what_examples_import():
    """This machine has the test packages too, so an example could pass here
    and fail on a machine that ran only the first command: every Python
    module an example imports must come with scripts/run."""
    pkgs = run_packages()
    for line in code_blocks()[1]:
        for mod in re.findall(r"\bimport (\w+)", line):
            rt.check("python3-" + mod in pkgs,
                     "the README imports %s, but scripts/run does not install "
                     "python3-%s (scripts/deps RUN_PKGS)" % (mod, mod))


def test_nothing_points_outside():
    files = subprocess.run(["git", "-C", TOP, "ls-files"], check=True,
                           capture_output=True, text=True).stdout.split()
    outside = ".." + "/shared"  # not the string itself: this file is tracked
    bad = []
    for name in files:
        path = os.path.join(TOP, name)
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        with open(path, "rb") as f:
            if outside.encode() in f.read():
                bad.append(name)
    rt.check(not bad, "files point outside the repository: %s" % bad)


def test_examples_against_scripts_run():
    blocks = code_blocks()
    examples = blocks[1]
    rt.check(len(examples) >= 2, "README's example block is empty")
    remove_netns()
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    rt._cleanup_hooks.append(remove_netns)
    netns("ip", "link", "set", "lo", "up", check=True)

    data = os.path.join(rt.tmpdir("ringmq-readme-"), "data")
    log_path = os.path.join(os.path.dirname(data), "scripts-run.log")
    log = open(log_path, "wb")
    run = subprocess.Popen(
        ["ip", "netns", "exec", NETNS, "./scripts/run", "--data-dir", data],
        cwd=TOP, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)

    def stop():
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
            try:
                run.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    rt._cleanup_hooks.append(stop)

    # scripts/run installs (nothing, here), builds, then starts the node:
    # the first example answers once the node serves.
    deadline = time.time() + 300
    out = None
    while time.time() < deadline:
        rt.check(run.poll() is None, "scripts/run exited %s:\n%s" % (
            run.returncode, open(log_path, errors="replace").read()[-3000:]))
        r = netns("sh", "-c", examples[0], cwd=TOP, capture_output=True,
                  text=True, timeout=30)
        if r.returncode == 0 and r.stdout.strip() == "world":
            out = r.stdout
            break
        time.sleep(0.5)
    rt.check(out is not None, "the memcached example never printed 'world'")

    expect = {"import memcache": "world", "import pika": "b'world'"}
    for line in examples:
        r = netns("sh", "-c", line, cwd=TOP, capture_output=True, text=True,
                  timeout=60)
        rt.check(r.returncode == 0, "%s\nexited %d: %s" % (
            line, r.returncode, r.stderr[-2000:]))
        for key, want in expect.items():
            if key in line:
                rt.check(r.stdout.strip() == want, "%s\nprinted %r, not %r" % (
                    line, r.stdout.strip(), want))

    stop()
    rt.check(run.returncode == 0,
             "the node exited %s on SIGTERM" % run.returncode)


if __name__ == "__main__":
    rt.run_tests([test_two_commands_first,
                  test_first_command_installs_what_examples_import,
                  test_nothing_points_outside,
                  test_examples_against_scripts_run])
