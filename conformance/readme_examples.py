"""Compiles and runs the "Ten lines" example of each client README against a real server.

    python conformance/with_server.py python conformance/readme_examples.py [go typescript java]

A README example that no longer compiles or runs is a broken promise to the
first user who pastes it, so CI runs each one exactly as written, with only
the address (127.0.0.1:50051) swapped for the test server's and the token
passed in CODEMODE_API_TOKEN as the examples expect.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_ADDRESS = "127.0.0.1:50051"
# Every example prints the value of `math.pi * 2 ** 2` and streams 0, 1, 2.
EXPECTED_OUTPUT = ("area", "12.566370614359172", "live: 0", "live: 2")
FENCES = {"go": "go", "typescript": "ts", "java": "java"}
RUN_TIMEOUT_SECONDS = 240


def example(language: str) -> str:
    with open(os.path.join(ROOT, "clients", language, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    match = re.search(r"## Ten lines\n\n```" + FENCES[language] + r"\n(.*?)```", readme, re.S)
    if match is None:
        raise SystemExit(f"clients/{language}/README.md has no '## Ten lines' {FENCES[language]} block")
    return match.group(1)


def run(command: list[str], cwd: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def go(source: str, work: str, env: dict[str, str]) -> str:
    module = "github.com/codemode-dev/codemode/clients/go"
    with open(os.path.join(work, "main.go"), "w", encoding="utf-8") as handle:
        handle.write(source)
    with open(os.path.join(work, "go.mod"), "w", encoding="utf-8") as handle:
        handle.write(
            f"module example\n\ngo 1.26\n\nrequire {module} v0.0.0\n\n"
            f"replace {module} => {os.path.join(ROOT, 'clients', 'go')}\n"
        )
    run(["go", "mod", "tidy"], work, env)
    return run(["go", "run", "."], work, env)


def typescript(source: str, work: str, env: dict[str, str]) -> str:
    package = os.path.join(ROOT, "clients", "typescript")
    os.makedirs(os.path.join(work, "node_modules", "@codemode"))
    os.symlink(package, os.path.join(work, "node_modules", "@codemode", "client"))
    with open(os.path.join(work, "example.mts"), "w", encoding="utf-8") as handle:
        handle.write(source)
    with open(os.path.join(work, "tsconfig.json"), "w", encoding="utf-8") as handle:
        handle.write(
            '{"compilerOptions": {"target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext",'
            ' "lib": ["ES2022", "ESNext.Disposable"], "types": ["node"], "strict": true, "skipLibCheck": true,'
            f' "typeRoots": ["{package}/node_modules/@types"]}}, "files": ["example.mts"]}}'
        )
    run(["npm", "--prefix", package, "run", "--silent", "build"], work, env)
    run([os.path.join(package, "node_modules", ".bin", "tsc"), "-p", "tsconfig.json"], work, env)
    return run(["node", "example.mjs"], work, env)


def java(source: str, work: str, env: dict[str, str]) -> str:
    pom = os.path.join(ROOT, "clients", "java", "pom.xml")
    classpath_file = os.path.join(work, "classpath.txt")
    run(["bash", os.path.join(ROOT, "scripts", "mvn.sh"), "-q", "-f", pom, "-DskipTests", "compile",
         "dependency:build-classpath", f"-Dmdep.outputFile={classpath_file}"], work, env)
    with open(classpath_file, encoding="utf-8") as handle:
        classpath = handle.read().strip() + os.pathsep + os.path.join(ROOT, "clients", "java", "target", "classes")
    with open(os.path.join(work, "Example.java"), "w", encoding="utf-8") as handle:
        handle.write(source)
    run(["javac", "-cp", classpath, "Example.java"], work, env)
    return run(["java", "-cp", classpath + os.pathsep + work, "Example"], work, env)


def main(languages: list[str]) -> int:
    target = os.environ.get("CODEMODE_CONFORMANCE_TARGET")
    if not target:
        print("readme_examples: run through conformance/with_server.py", file=sys.stderr)
        return 2
    env = dict(os.environ, CODEMODE_API_TOKEN=os.environ.get("CODEMODE_CONFORMANCE_TOKEN", ""))
    failed = 0
    for language in languages or list(FENCES):
        work = tempfile.mkdtemp(prefix=f"cm-readme-{language}-")
        try:
            source = example(language).replace(README_ADDRESS, target)
            output = {"go": go, "typescript": typescript, "java": java}[language](source, work, env)
            missing = [line for line in EXPECTED_OUTPUT if line not in output]
            if missing:
                raise RuntimeError(f"output lacks {missing}:\n{output}")
            print(f"readme example ({language}): ok")
        except (RuntimeError, subprocess.TimeoutExpired) as problem:
            failed += 1
            print(f"readme example ({language}): FAILED\n{problem}", file=sys.stderr)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
