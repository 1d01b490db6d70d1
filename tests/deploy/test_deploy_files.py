#!/usr/bin/python3
"""docker/ and helm/ without a container engine or a cluster (issue 6):

  - docker-compose validates both compose files (and the 2-shard variant
    on top of the base);
  - yamllint passes on docker/, the chart's own YAML and the rendered
    manifests;
  - `helm lint --strict` passes with the default values and a 2-shard
    values file, and the schema refuses bad values;
  - `helm template` renders, with both values files, manifests that hold
    together: a StatefulSet per shard with replicas = members and a headless
    Service publishing not-ready addresses, a cluster-map ConfigMap whose
    shards, weights, ids and addresses match the values and the pods' DNS
    names (and that ringmqctl accepts), readiness probes on /healthz,
    PodDisruptionBudgets keeping a majority, the users Secret.

  test_deploy_files.py BUILD_DIR
"""
import os
import subprocess
import sys
import tempfile
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
CHART = os.path.join(TOP, "helm", "ringmq")
BUILD = None
HELM = None
VALUES_NEW = ["values-3shards.yaml", "values-remove.yaml"]
CTL = "ringmqctl --cluster /etc/ringmq/cluster.yaml"


def run(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, timeout=120,
                       **kw)
    if r.returncode != 0:
        raise AssertionError("%s: exit %d\n%s%s" % (" ".join(args),
                                                    r.returncode, r.stdout,
                                                    r.stderr))
    return r.stdout


def render(values=None, release="ringmq"):
    args = [HELM, "template", release, CHART, "--namespace", "mq"]
    if values:
        args += ["-f", values]
    text = run(args)
    return text, [d for d in yaml.safe_load_all(text) if d]


def render_set(sets, values=None):
    args = [HELM, "template", "ringmq", CHART, "--namespace", "mq"]
    if values:
        args += ["-f", values]
    for v in sets:
        args += ["--set", v]
    text = run(args)
    return text, [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


class Compose(unittest.TestCase):
    def variant(self, extra, nodes, cmap):
        """docker-compose.yml with @extra on top: services node1..@nodes and
        both routers, every one reading @cmap, every node its own volume."""
        d = os.path.join(TOP, "docker")
        out = run(["docker-compose", "-f",
                   os.path.join(d, "docker-compose.yml"), "-f",
                   os.path.join(d, extra), "config"])
        cfg = yaml.safe_load(out)
        self.assertEqual(sorted(cfg["services"]),
                         ["node%d" % i for i in range(1, nodes + 1)] +
                         ["router1", "router2"])
        for name, svc in cfg["services"].items():
            self.assertEqual(svc["environment"]["RINGMQ_CLUSTER"],
                             "/etc/ringmq/" + cmap, name)
            if name.startswith("node"):
                self.assertIn("%s-data:/var/lib/ringmq:rw" % name,
                              svc["volumes"])

    def test_compose_files_validate(self):
        d = os.path.join(TOP, "docker")
        run(["docker-compose", "-f", os.path.join(d, "docker-compose.yml"),
             "config", "-q"])
        self.variant("docker-compose.2shards.yml", 6, "cluster-2shards.yaml")

    def test_compose_3shards_overlay(self):
        d = os.path.join(TOP, "docker")
        files = []
        for f in ("docker-compose.yml", "docker-compose.2shards.yml",
                  "docker-compose.3shards.yml"):
            files += ["-f", os.path.join(d, f)]
        base = yaml.safe_load(run(["docker-compose"] + files[:4] +
                                  ["config"]))
        cfg = yaml.safe_load(run(["docker-compose"] + files + ["config"]))
        self.assertEqual(sorted(cfg["services"]),
                         ["node%d" % i for i in range(1, 10)] +
                         ["router1", "router2"])
        # the running services are exactly as they were: `up -d` leaves
        # them running
        for name, svc in base["services"].items():
            self.assertEqual(cfg["services"][name], svc, name)
        for i in (7, 8, 9):
            svc = cfg["services"]["node%d" % i]
            self.assertEqual(svc["hostname"], "node%d" % i)
            self.assertEqual(svc["command"], ["node"])
            self.assertEqual(svc["environment"]["RINGMQ_CLUSTER"],
                             "/etc/ringmq/cluster-3shards.yaml")
            self.assertIn("node%d-data:/var/lib/ringmq:rw" % i,
                          svc["volumes"])
            self.assertIn("node%d-data" % i, cfg["volumes"])
        with open(os.path.join(d, "cluster-3shards.yaml")) as f:
            cmap = yaml.safe_load(f)
        with open(os.path.join(d, "cluster-2shards.yaml")) as f:
            old = yaml.safe_load(f)
        # the first two shards are the running cluster's
        self.assertEqual(cmap["shards"][:2], old["shards"])
        s3 = cmap["shards"][2]
        self.assertEqual((s3["name"], s3["weight"]), ("s3", 1))
        members = ",".join("%d@%s@%s" % (m["id"], m["raft"], m["rpc"])
                           for m in s3["members"])
        self.assertEqual(members, "7@node7:7210@node7:7101,"
                         "8@node8:7210@node8:7101,9@node9:7210@node9:7101")
        # the documented command adds s3 with exactly those members
        want = ("ringmqctl --cluster /etc/ringmq/cluster-3shards.yaml "
                "shard add s3 --weight 1 --members " + members)
        with open(os.path.join(TOP, "docs", "deploy.md")) as f:
            doc = f.read().replace("\\\n", " ")
        self.assertIn(want, " ".join(doc.split()))
        with open(os.path.join(d, "docker-compose.3shards.yml")) as f:
            head = f.read().replace("\\\n#", " ").replace("#", " ")
        self.assertIn(want, " ".join(head.split()))

    def test_compose_node4_variant(self):
        d = os.path.join(TOP, "docker")
        self.variant("docker-compose.node4.yml", 4, "cluster-node4.yaml")
        with open(os.path.join(d, "cluster-node4.yaml")) as f:
            cmap = yaml.safe_load(f)
        members = cmap["shards"][0]["members"]
        self.assertEqual([m.get("join", False) for m in members],
                         [False, False, False, True])

    def test_compose_maps_load(self):
        for f in ("cluster.yaml", "cluster-2shards.yaml", "cluster-node4.yaml",
                  "cluster-3shards.yaml"):
            out = run([os.path.join(BUILD, "tools", "ringmqctl"), "--cluster",
                       os.path.join(TOP, "docker", f), "owner", "k"])
            self.assertIn("s", out)

    def test_yamllint(self):
        run(["yamllint", "-c", os.path.join(TOP, ".yamllint"),
             os.path.join(TOP, "docker"), os.path.join(CHART, "Chart.yaml"),
             os.path.join(CHART, "values.yaml"),
             os.path.join(HERE, "values-2shards.yaml"),
             os.path.join(HERE, "values-scaled.yaml")] +
            [os.path.join(HERE, v) for v in VALUES_NEW])
        for values in [None, os.path.join(HERE, "values-2shards.yaml"),
                       os.path.join(HERE, "values-scaled.yaml")] + \
                [os.path.join(HERE, v) for v in VALUES_NEW]:
            text, _ = render(values)
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                f.write(text)
                f.flush()
                run(["yamllint", "-c", os.path.join(TOP, ".yamllint"),
                     f.name])


class Chart(unittest.TestCase):
    def test_lint_strict(self):
        run([HELM, "lint", "--strict", CHART])
        for values in ["values-2shards.yaml", "values-scaled.yaml"] + \
                VALUES_NEW:
            run([HELM, "lint", "--strict", CHART, "-f",
                 os.path.join(HERE, values)])

    def test_schema_refuses_bad_values(self):
        for bad in ("replicasPerShard=4", "readMode=fast",
                    "shards[0].name=s1,shards[0].weight=1,"
                    "shards[0].replicas=10",
                    "shards[0].weight=0", "shards[0].name=Bad_Name"):
            r = subprocess.run([HELM, "lint", "--strict", CHART, "--set",
                                bad], capture_output=True, text=True,
                               timeout=60)
            self.assertNotEqual(r.returncode, 0, bad)

    def check(self, values_path, shards, replicas, users, first=None,
              ids=None, anti="soft"):
        """@replicas: members of every shard, or a list per shard; @first:
        replicasPerShard (the members a shard starts with), default
        @replicas; @ids: each shard's id (default: its position); @anti:
        node.antiAffinity. Returns the rendered documents."""
        _, docs = render(values_path)
        ids = ids if ids is not None else list(range(len(shards)))
        per_shard = replicas if isinstance(replicas, list) else \
            [replicas] * len(shards)
        first = first if first is not None else replicas
        sts = {d["metadata"]["name"]: d for d in by_kind(docs, "StatefulSet")}
        svcs = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}
        pdbs = {d["metadata"]["name"]: d
                for d in by_kind(docs, "PodDisruptionBudget")}
        (cm,) = by_kind(docs, "ConfigMap")
        cmap = yaml.safe_load(cm["data"]["cluster.yaml"])
        self.assertEqual([(s["name"], s["weight"]) for s in cmap["shards"]],
                         shards)
        for i, (name, _) in enumerate(shards):
            full = "ringmq-" + name
            st = sts[full]
            replicas = per_shard[i]
            majority = replicas // 2 + 1
            self.assertEqual(st["spec"]["replicas"], replicas)
            self.assertEqual(st["spec"]["serviceName"], full)
            self.assertEqual(st["spec"]["podManagementPolicy"], "Parallel")
            self.assertEqual(len(st["spec"]["volumeClaimTemplates"]), 1)
            self.assertTrue(svcs[full]["spec"]["publishNotReadyAddresses"])
            self.assertEqual(svcs[full]["spec"]["clusterIP"], "None")
            c = st["spec"]["template"]["spec"]["containers"][0]
            self.assertEqual(c["readinessProbe"]["httpGet"]["path"],
                             "/readyz")
            self.assertEqual(c["readinessProbe"]["httpGet"]["port"],
                             "metrics")
            self.assertEqual(c["livenessProbe"]["httpGet"]["path"],
                             "/healthz?live")
            self.check_anti_affinity(st, name, anti)
            env = {e["name"]: e["value"] for e in c["env"]}
            base = int(env["RINGMQ_NODE_ID_BASE"])
            self.assertEqual(pdbs[full]["spec"]["minAvailable"], majority)
            members = cmap["shards"][i]["members"]
            self.assertEqual(len(members), replicas)
            for k, m in enumerate(members):
                # pod <full>-<k> gets id base + k from the entrypoint; ids
                # depend on the position alone, so scaling keeps them
                self.assertEqual(base, ids[i] * 10 + 1)
                self.assertEqual(m["id"], base + k)
                host = "%s-%d.%s" % (full, k, full)
                self.assertEqual(m["raft"], host + ":7210")
                self.assertEqual(m["rpc"], host + ":7101")
                # pods past the first members were added later: they join
                self.assertEqual(m.get("join", False), k >= first, m)
        (dep,) = by_kind(docs, "Deployment")
        rc = dep["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(rc["readinessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(rc["livenessProbe"]["httpGet"]["path"],
                         "/healthz?live")
        ports = {p["name"]: p["port"] for p in svcs["ringmq"]["spec"]["ports"]}
        self.assertEqual(ports, {"memcached": 11211, "amqp": 5672})
        (sec,) = by_kind(docs, "Secret")
        lines = sec["stringData"]["amqp-users"].split()
        self.assertEqual(lines, ["%s:%s" % u for u in users])
        # ringmq itself accepts the rendered map
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(cm["data"]["cluster.yaml"])
            f.flush()
            out = run([os.path.join(BUILD, "tools", "ringmqctl"), "--cluster",
                       f.name, "owner", "some-key"])
            self.assertTrue(any(s[0] in out for s in shards))
        return docs

    def check_anti_affinity(self, st, shard, anti):
        spec = st["spec"]["template"]["spec"]
        if anti == "none":
            self.assertNotIn("affinity", spec)
            return
        paa = spec["affinity"]["podAntiAffinity"]
        if anti == "soft":
            self.assertEqual(list(paa),
                             ["preferredDuringSchedulingIgnoredDuringExecution"])
            (pref,) = paa["preferredDuringSchedulingIgnoredDuringExecution"]
            self.assertEqual(pref["weight"], 100)
            term = pref["podAffinityTerm"]
        else:
            self.assertEqual(list(paa),
                             ["requiredDuringSchedulingIgnoredDuringExecution"])
            (term,) = paa["requiredDuringSchedulingIgnoredDuringExecution"]
        self.assertEqual(term["topologyKey"], "kubernetes.io/hostname")
        # the selector picks this shard's pods, and they carry its labels
        sel = term["labelSelector"]["matchLabels"]
        self.assertEqual(sel, {"app.kubernetes.io/instance": "ringmq",
                               "app.kubernetes.io/component": "node",
                               "ringmq.io/shard": shard})
        labels = st["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(all(labels[k] == v for k, v in sel.items()))

    def test_default_values(self):
        self.check(None, [("s1", 1)], 3, [("ringmq", "change-me")])

    def test_two_shards(self):
        self.check(os.path.join(HERE, "values-2shards.yaml"),
                   [("s1", 1), ("s2", 3)], 5,
                   [("app", "s3cret:with:colons"), ("ops", "other")])

    def test_shard_scaled_after_install(self):
        self.check(os.path.join(HERE, "values-scaled.yaml"),
                   [("s1", 1), ("s2", 2)], [5, 3],
                   [("ringmq", "change-me")], first=3)

    def test_affinity_overrides(self):
        _, docs = render_set(["node.antiAffinity=none"])
        for st in by_kind(docs, "StatefulSet"):
            self.check_anti_affinity(st, "s1", "none")
        _, docs = render_set(["node.antiAffinityTopologyKey=zone"])
        (st,) = by_kind(docs, "StatefulSet")
        term = st["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"][0]
        self.assertEqual(term["podAffinityTerm"]["topologyKey"], "zone")
        # node.affinity replaces the default whole
        _, docs = render_set(["node.affinity.nodeAffinity.x=y"])
        (st,) = by_kind(docs, "StatefulSet")
        self.assertEqual(st["spec"]["template"]["spec"]["affinity"],
                         {"nodeAffinity": {"x": "y"}})

    def test_long_names(self):
        # pod DNS names past 63 bytes (a long release name) render
        _, docs = render(None, release="r" * 40)
        (cm,) = by_kind(docs, "ConfigMap")
        cmap = yaml.safe_load(cm["data"]["cluster.yaml"])
        raft = cmap["shards"][0]["members"][0]["raft"]
        self.assertGreater(len(raft), 63)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(cm["data"]["cluster.yaml"])
            f.flush()
            run([os.path.join(BUILD, "tools", "ringmqctl"), "--cluster",
                 f.name, "owner", "k"])

def live_map(shards):
    """`ringmqctl map` output for @shards [(name, weight, state)]."""
    lines = ["epoch 7"]
    for name, weight, state in shards:
        lines.append("shard %s weight %d %s" % (name, weight, state))
        lines.append("  %-10s member 1 raft h:7210 rpc h:7101" % name)
    lines += ["meta", "  meta       member 1 raft h:7212 rpc h:7101"]
    return "\n".join(lines) + "\n"


def run_job(job, live, fail_on=None):
    """Run @job's container command with a stub ringmqctl on PATH whose
    `map` prints @live; returns (exit status, [argument lists])."""
    (c,) = job["spec"]["template"]["spec"]["containers"]
    with tempfile.TemporaryDirectory() as d:
        calls = os.path.join(d, "calls")
        with open(os.path.join(d, "live"), "w") as f:
            f.write(live)
        stub = os.path.join(d, "ringmqctl")
        with open(stub, "w") as f:
            f.write("#!/bin/sh\n"
                    "printf 'ringmqctl %%s\\n' \"$*\" >>%s\n"
                    "[ \"$3\" = map ] && cat %s/live\n"
                    "[ -n \"${FAIL_ON:-}\" ] && [ \"$3 $4\" = \"$FAIL_ON\" ] && exit 2\n"
                    "exit 0\n" % (calls, d))
        os.chmod(stub, 0o755)
        env = dict(os.environ, PATH=d + ":" + os.environ["PATH"],
                   FAIL_ON=fail_on or "")
        r = subprocess.run(c["command"], env=env, capture_output=True,
                           text=True, timeout=30)
        got = []
        if os.path.exists(calls):
            with open(calls) as f:
                got = [line.split() for line in f.read().splitlines()]
        return r.returncode, got


def members(shard, base, n):
    full = "ringmq-" + shard
    return ",".join("%d@%s-%d.%s:7210@%s-%d.%s:7101" %
                    (base + k, full, k, full, full, k, full)
                    for k in range(n))


class Reshard(unittest.TestCase):
    """The chart's shard changes on a running cluster."""

    def hook_jobs(self, docs):
        return {d["metadata"]["name"]: d for d in by_kind(docs, "Job")}

    def check_hook(self, job, hook):
        ann = job["metadata"]["annotations"]
        self.assertEqual(ann["helm.sh/hook"], hook)
        self.assertEqual(ann["helm.sh/hook-delete-policy"],
                         "before-hook-creation")
        self.assertEqual(job["spec"]["backoffLimit"], 6)
        self.assertEqual(job["spec"]["activeDeadlineSeconds"], 3600)
        pod = job["spec"]["template"]["spec"]
        self.assertEqual(pod["restartPolicy"], "Never")
        (c,) = pod["containers"]
        self.assertEqual(c["volumeMounts"][0]["mountPath"], "/etc/ringmq")
        self.assertEqual(pod["volumes"][0]["configMap"]["name"], "ringmq-map")

    def test_upgrade_two_to_three_shards(self):
        chart = Chart()
        users = [("app", "s3cret:with:colons"), ("ops", "other")]
        before = chart.check(os.path.join(HERE, "values-2shards.yaml"),
                             [("s1", 1), ("s2", 3)], 5, users)
        after = chart.check(os.path.join(HERE, "values-3shards.yaml"),
                            [("s1", 1), ("s2", 3), ("s3", 1)], 5, users)
        sts0 = {d["metadata"]["name"]: d for d in by_kind(before,
                                                           "StatefulSet")}
        sts1 = {d["metadata"]["name"]: d for d in by_kind(after,
                                                          "StatefulSet")}
        self.assertEqual(sorted(sts1), ["ringmq-s1", "ringmq-s2", "ringmq-s3"])
        # the old shards keep their ids and pods: only the map checksum
        # annotation differs (the pods roll onto the new file)
        for name in ("ringmq-s1", "ringmq-s2"):
            a, b = sts0[name], sts1[name]
            self.assertEqual(a["spec"]["template"]["spec"],
                             b["spec"]["template"]["spec"])
            self.assertEqual(a["spec"]["replicas"], b["spec"]["replicas"])
        env = {e["name"]: e["value"] for e in sts1["ringmq-s3"]["spec"][
            "template"]["spec"]["containers"][0]["env"]}
        self.assertEqual(env["RINGMQ_NODE_ID_BASE"], "21")
        # one hook Job in both: post-upgrade (on install it never runs)
        for docs in (before, after):
            jobs = self.hook_jobs(docs)
            self.assertEqual(sorted(jobs), ["ringmq-shard-add"])
            self.check_hook(jobs["ringmq-shard-add"], "post-upgrade")
        job = self.hook_jobs(after)["ringmq-shard-add"]
        add_s3 = (CTL + " shard add s3 --weight 1 --members " +
                  members("s3", 21, 5)).split()
        # the upgrade: the live map has s1 and s2: s3 is added, nothing else
        rc, calls = run_job(job, live_map([("s1", 1, "serving"),
                                           ("s2", 3, "serving")]))
        self.assertEqual(rc, 0)
        self.assertEqual(calls, [(CTL + " map").split(), add_s3])
        # a Job run again after it was done does nothing
        rc, calls = run_job(job, live_map([("s1", 1, "serving"),
                                           ("s2", 3, "serving"),
                                           ("s3", 1, "serving")]))
        self.assertEqual((rc, calls), (0, [(CTL + " map").split()]))
        # an interrupted add (s3 joining) is resumed
        rc, calls = run_job(job, live_map([("s1", 1, "serving"),
                                           ("s2", 3, "serving"),
                                           ("s3", 1, "joining")]))
        self.assertEqual((rc, calls), (0, [(CTL + " map").split(), add_s3]))
        # a weight changed in values is set
        rc, calls = run_job(job, live_map([("s1", 1, "serving"),
                                           ("s2", 2, "serving"),
                                           ("s3", 1, "serving")]))
        self.assertEqual((rc, calls), (0, [(CTL + " map").split(),
                                           (CTL + " shard weight s2 3")
                                           .split()]))
        # a failed move fails the Job (Kubernetes retries it)
        rc, _ = run_job(job, live_map([("s1", 1, "serving")]),
                        fail_on="shard add")
        self.assertNotEqual(rc, 0)
        # no meta group answering: the Job fails instead of adding blindly
        rc, calls = run_job(job, "", fail_on="map ")
        self.assertNotEqual(rc, 0)
        self.assertEqual(calls, [(CTL + " map").split()])

    def test_new_shard_with_more_replicas(self):
        # a new shard's first members are the replicasPerShard first pods;
        # the later ones join with `member add` (NOTES.txt prints them)
        text, docs = render(os.path.join(HERE, "values-scaled.yaml"))
        job = self.hook_jobs(docs)["ringmq-shard-add"]
        rc, calls = run_job(job, live_map([]))
        self.assertEqual(rc, 0)
        self.assertEqual(calls[1], (CTL + " shard add s1 --weight 1 "
                                    "--members " + members("s1", 1, 3))
                         .split())
        self.assertEqual(calls[2], (CTL + " shard add s2 --weight 2 "
                                    "--members " + members("s2", 11, 3))
                         .split())

    def test_remove_shard(self):
        docs = Chart().check(os.path.join(HERE, "values-remove.yaml"),
                             [("s1", 1), ("s3", 1)], 5,
                             [("ringmq", "change-me")], ids=[0, 2],
                             anti="hard")
        sts = {d["metadata"]["name"] for d in by_kind(docs, "StatefulSet")}
        self.assertEqual(sts, {"ringmq-s1", "ringmq-s3"})
        jobs = self.hook_jobs(docs)
        self.assertEqual(sorted(jobs), ["ringmq-shard-add",
                                        "ringmq-shard-remove"])
        self.check_hook(jobs["ringmq-shard-remove"], "pre-upgrade")
        self.check_hook(jobs["ringmq-shard-add"], "post-upgrade")
        rc, calls = run_job(jobs["ringmq-shard-remove"], "")
        self.assertEqual((rc, calls),
                         (0, [(CTL + " shard remove s2").split()]))
        rc, _ = run_job(jobs["ringmq-shard-remove"], "",
                        fail_on="shard remove")
        self.assertNotEqual(rc, 0)
        # after the removal the add Job finds s1 and s3 serving: nothing
        rc, calls = run_job(jobs["ringmq-shard-add"],
                            live_map([("s1", 1, "serving"),
                                      ("s3", 1, "serving")]))
        self.assertEqual((rc, calls), (0, [(CTL + " map").split()]))

    def test_refused_shard_values(self):
        bad = [
            # removing a shard while another has no id would renumber it
            ["shards[0].name=s1", "shards[0].weight=1", "shards[1].name=s3",
             "shards[1].weight=1", "removeShards[0]=s2"],
            # the first shard hosts meta: it keeps id 0
            ["shards[0].name=s2", "shards[0].weight=1", "shards[0].id=1",
             "removeShards[0]=s1"],
            # ids are unique
            ["shards[0].name=s1", "shards[0].weight=1", "shards[0].id=0",
             "shards[1].name=s2", "shards[1].weight=1", "shards[1].id=0"],
            # a name in both lists
            ["shards[0].name=s1", "shards[0].weight=1", "shards[0].id=0",
             "removeShards[0]=s1"],
            ["node.antiAffinity=always"],
        ]
        for sets in bad:
            args = [HELM, "template", "ringmq", CHART]
            for v in sets:
                args += ["--set", v]
            r = subprocess.run(args, capture_output=True, text=True,
                               timeout=60)
            self.assertNotEqual(r.returncode, 0, sets)
        # hook Jobs can be turned off
        _, docs = render_set(["shardJobs.enabled=false"])
        self.assertEqual(by_kind(docs, "Job"), [])


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv[1])
    del sys.argv[1]
    HELM = os.path.join(BUILD, "tools-helm", "helm")
    run([os.path.join(HERE, "get-helm"), os.path.dirname(HELM)])
    unittest.main(verbosity=2)
