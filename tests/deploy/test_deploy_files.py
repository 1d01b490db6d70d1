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

    def test_compose_node4_variant(self):
        d = os.path.join(TOP, "docker")
        self.variant("docker-compose.node4.yml", 4, "cluster-node4.yaml")
        with open(os.path.join(d, "cluster-node4.yaml")) as f:
            cmap = yaml.safe_load(f)
        members = cmap["shards"][0]["members"]
        self.assertEqual([m.get("join", False) for m in members],
                         [False, False, False, True])

    def test_compose_maps_load(self):
        for f in ("cluster.yaml", "cluster-2shards.yaml", "cluster-node4.yaml"):
            out = run([os.path.join(BUILD, "tools", "ringmqctl"), "--cluster",
                       os.path.join(TOP, "docker", f), "owner", "k"])
            self.assertIn("s", out)

    def test_yamllint(self):
        run(["yamllint", "-c", os.path.join(TOP, ".yamllint"),
             os.path.join(TOP, "docker"), os.path.join(CHART, "Chart.yaml"),
             os.path.join(CHART, "values.yaml"),
             os.path.join(HERE, "values-2shards.yaml"),
             os.path.join(HERE, "values-scaled.yaml")])
        for values in (None, os.path.join(HERE, "values-2shards.yaml"),
                       os.path.join(HERE, "values-scaled.yaml")):
            text, _ = render(values)
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                f.write(text)
                f.flush()
                run(["yamllint", "-c", os.path.join(TOP, ".yamllint"),
                     f.name])


class Chart(unittest.TestCase):
    def test_lint_strict(self):
        run([HELM, "lint", "--strict", CHART])
        for values in ("values-2shards.yaml", "values-scaled.yaml"):
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

    def check(self, values_path, shards, replicas, users, first=None):
        """@replicas: members of every shard, or a list per shard; @first:
        replicasPerShard (the members a shard starts with), default
        @replicas."""
        _, docs = render(values_path)
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
                             "/healthz")
            self.assertEqual(c["livenessProbe"]["httpGet"]["path"],
                             "/healthz?live")
            env = {e["name"]: e["value"] for e in c["env"]}
            base = int(env["RINGMQ_NODE_ID_BASE"])
            self.assertEqual(pdbs[full]["spec"]["minAvailable"], majority)
            members = cmap["shards"][i]["members"]
            self.assertEqual(len(members), replicas)
            for k, m in enumerate(members):
                # pod <full>-<k> gets id base + k from the entrypoint; ids
                # depend on the position alone, so scaling keeps them
                self.assertEqual(base, i * 10 + 1)
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


if __name__ == "__main__":
    BUILD = os.path.abspath(sys.argv[1])
    del sys.argv[1]
    HELM = os.path.join(BUILD, "tools-helm", "helm")
    run([os.path.join(HERE, "get-helm"), os.path.dirname(HELM)])
    unittest.main(verbosity=2)
