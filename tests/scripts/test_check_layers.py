#!/usr/bin/python3
"""scripts/check-layers on small trees: a clean one passes, and each kind of
violation, planted alone, is found (a check that cannot fail proves
nothing). Calls are read from object files, so the trees are compiled with
cc into the layout CMake gives objects (build/<layer>/CMakeFiles/...)."""
import os
import shutil
import subprocess
import sys
import tempfile

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHECK = os.path.join(TOP, "scripts", "check-layers")

passed = failed = 0


def write(root, path, text):
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)


def clean_tree(root):
    """Layer a (uses nothing), layer b (uses a, libuv); modules a/x, a/y,
    b/z; z calls x, x calls y: one way."""
    write(root, "a/CMakeLists.txt",
          "# a: the bottom\nringmq_library(ringmq_a USES SYSTEM)\n")
    write(root, "b/CMakeLists.txt",
          "ringmq_library(ringmq_b USES a SYSTEM uv)\n")
    write(root, "a/x.h", "int x_f(void);\n")
    write(root, "a/y.h", "int y_f(void);\n")
    write(root, "a/x.c", '#include "a/x.h"\n#include "a/y.h"\n'
          "int x_f(void) { return y_f(); }\n")
    write(root, "a/y.c", '#include "a/y.h"\n#include <string.h>\n'
          "int y_f(void) { return (int)strlen(\"y\"); }\n")
    write(root, "b/z.h", "int z_f(void);\n")
    write(root, "b/z.c", '#include "b/z.h"\n#include "a/x.h"\n#include <uv.h>\n'
          "int z_f(void) { return x_f(); }\n")


def compile_tree(root, only_newer=False):
    """Compile every .c of the tree, or with @only_newer the ones a plant
    wrote or changed since their object was made (or that include a header
    it changed): the clean tree's objects are reused."""
    for layer in ("a", "b"):
        d = os.path.join(root, layer)
        headers = max(os.path.getmtime(os.path.join(root, l, n))
                      for l in ("a", "b")
                      for n in os.listdir(os.path.join(root, l))
                      if n.endswith(".h"))
        for name in os.listdir(d):
            if name.endswith(".c"):
                src = os.path.join(d, name)
                obj = os.path.join(root, "build", layer, "CMakeFiles",
                                   "ringmq_%s.dir" % layer, name + ".o")
                if only_newer and os.path.exists(obj) and \
                        os.path.getmtime(obj) > max(
                            os.path.getmtime(src), headers):
                    continue
                os.makedirs(os.path.dirname(obj), exist_ok=True)
                subprocess.run(["cc", "-c", "-I", root, "-o", obj, src],
                               check=True)


def link_program(root, layer, name):
    """A program of @layer that needs libuv (as ringmq-router would)."""
    src = os.path.join(root, "build", "prog_main.c")
    with open(src, "w") as f:
        f.write("#include <uv.h>\nint main(void) { return !uv_version(); }\n")
    out = os.path.join(root, "build", layer, name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    subprocess.run(["cc", "-o", out, src, "-luv"], check=True)


def case(name, plant, want_ok, want_text=None):
    global passed, failed
    root = tempfile.mkdtemp(prefix="check-layers-")
    try:
        clean_tree(root)
        compile_tree(root)
        link_program(root, "b", "prog")  # b may use libuv: fine
        plant(root)
        compile_tree(root, only_newer=True)
        r = subprocess.run([sys.executable, CHECK, "--root", root,
                            "--build", os.path.join(root, "build")],
                           capture_output=True, text=True, timeout=60)
        ok = (r.returncode == 0) == want_ok and \
            (want_text is None or want_text in r.stdout)
        if ok:
            passed += 1
            print("ok   " + name)
        else:
            failed += 1
            print("FAIL %s: exit %d, wanted %s%s\n%s%s" % (
                name, r.returncode, "0" if want_ok else "1",
                " and %r" % want_text if want_text else "", r.stdout,
                r.stderr))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def nothing(root):
    pass


def upward_include(root):
    write(root, "a/y.c", '#include "a/y.h"\n#include "b/z.h"\n'
          "int y_f(void) { return 1; }\n")


def libuv_in_a(root):
    write(root, "a/y.c", '#include "a/y.h"\n#include <uv.h>\n'
          "int y_f(void) { return 1; }\n")


def sockets_in_a(root):
    write(root, "a/y.c", '#include "a/y.h"\n#include <sys/socket.h>\n'
          "int y_f(void) { return 1; }\n")


def include_circle(root):
    write(root, "a/y.c", '#include "a/y.h"\n#include "a/x.h"\n'
          "int y_f(void) { return 1; }\n")


def call_circle(root):
    # y calls x by a prototype of its own: no include shows it
    write(root, "a/y.c", '#include "a/y.h"\nint x_f(void);\n'
          "int y_f(void) { static int n; return n++ ? 0 : x_f(); }\n")


def three_module_circle(root):
    write(root, "a/w.h", "int w_f(void);\n")
    write(root, "a/w.c", '#include "a/w.h"\nint x_f(void);\n'
          "int w_f(void) { static int n; return n++ ? 0 : x_f(); }\n")
    write(root, "a/y.c", '#include "a/y.h"\n#include "a/w.h"\n'
          "int y_f(void) { return w_f(); }\n")


def layer_circle(root):
    write(root, "a/CMakeLists.txt",
          "ringmq_library(ringmq_a USES b SYSTEM)\n")


def unknown_layer_include(root):
    write(root, "nowhere/q.h", "int q_f(void);\n")  # a folder, not a layer
    write(root, "a/y.c", '#include "a/y.h"\n#include "nowhere/q.h"\n'
          "int y_f(void) { return 1; }\n")


def program_needs_forbidden_library(root):
    link_program(root, "a", "prog")


if __name__ == "__main__":
    case("a clean tree passes", nothing, True, "ok")
    case("a layer including one above it", upward_include, False,
         "a may not use b")
    case("libuv where it is not listed", libuv_in_a, False,
         "a may not use uv")
    case("sockets where they are not listed", sockets_in_a, False,
         "a may not use sockets")
    case("two modules including each other", include_circle, False,
         "modules depend on each other: a/x, a/y")
    case("two modules calling each other", call_circle, False,
         "a/y calls x_f (a/x)")
    case("a circle of three modules by calls", three_module_circle, False,
         "a/w, a/x, a/y")
    case("layers using each other", layer_circle, False,
         "layers use each other")
    case("a header of no layer", unknown_layer_include, False,
         "of no layer")
    case("a program needing a library its layers may not use",
         program_needs_forbidden_library, False,
         "a/prog needs libuv.so.1, but a and the layers it uses may not use uv")
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)
