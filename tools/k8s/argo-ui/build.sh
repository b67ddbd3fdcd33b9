#!/usr/bin/env bash
# The Argo UI of the pinned Argo Workflows release, built from the release's own sources:
#
#   tools/k8s/argo-ui/build.sh SRC    SRC: a writable copy of the github.com/argoproj/argo-workflows/v3 module
#
# writes SRC/ui/dist/app, which `argo` embeds (tools/k8s/build.sh argo-workflows calls this first). Upstream
# runs `yarn install && yarn build` in ui/ (webpack; it also copies ../api's swagger.json and schema.json).
# One of the UI's dependencies cannot be had here: argo-ui, a git dependency on a GitHub commit. npm has only
# argo-ui 1.0.0 (2021), whose src/ has every module the UI imports, so this build uses it:
# - package.json: "argo-ui" -> "1.0.0", plus "uuid": "^3.4.0" (argo-ui 1.0.0 requires uuid/v1 without
#   declaring it);
# - yarn.lock.patch: the git argo-ui entry and what only it needed (rxjs 7, react-toastify 9, tippy 3,
#   xterm 4 ...) replaced by argo-ui 1.0.0 and its own older dependencies (rxjs 6.6.7, react-toastify 5.5.0,
#   @tippy.js/react 2.2.3, xterm 2.4.0, uuid 3.4.0); every other package keeps the version upstream locked.
#   Made once by a non-frozen `yarn install` of the edited package.json, so that the install here stays
#   --frozen-lockfile (ui/.yarnrc) and two builds give the same files.
# Known differences from upstream's UI (type-level, found with tsc): the nav bar colour setting is ignored,
# the filter autocomplete does not highlight, toasts, tooltips and the log viewer are argo-ui 1.0.0's.
#
# Needs node >= 20 and the npm registry: yarn 1.22.22 comes from it, the packages from registry.yarnpkg.com
# (the host the lockfile names, npm's registry under another name), and esbuild's install script fetches its
# platform package from registry.npmjs.org. SRC must be a fresh copy (the edits are checked against upstream's
# files). Caches: ${XDG_CACHE_HOME:-~/.cache}/filedrop/{node-tools,yarn,npm}.
# About 1 min to install and 2 min to build on 2 cores (measured: 57 s and 110 s), 2.6 GB of memory at the peak.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=${1:?usage: build.sh SRC (a writable copy of the argo-workflows module)}
ui=$src/ui
[[ -f $ui/package.json && -f $src/api/openapi-spec/swagger.json ]] || { echo "argo-ui: no ui/ and api/ in $src" >&2; exit 2; }
node_major=$(node --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p')
(( ${node_major:-0} >= 20 )) || { echo "argo-ui: needs node >= 20 (ui/package.json's engines), found '$(node --version 2>&1)'" >&2; exit 2; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/filedrop
export YARN_CACHE_FOLDER=$cache/yarn npm_config_cache=$cache/npm YARN_DISABLE_SELF_UPDATE_CHECK=true
tools=$cache/node-tools
yarn=$tools/node_modules/.bin/yarn
if [[ $("$yarn" --version 2>/dev/null || true) != 1.22.22 ]]; then
  npm install --no-audit --no-fund --silent --prefix "$tools" yarn@1.22.22 >&2
fi

cd "$ui"
# the release this recipe was made for (a new release needs a new lock patch)
sha256sum -c --quiet - <<'SUMS'
f6c554f30b55b830972c97f66a659b8c7a05f4635f91f90f06a0e609fb153974  yarn.lock
ed408cd470cfc9fa7f989646fd5ec89cdd7c42a3cd2691a1d4603dbbc00ac71d  package.json
SUMS
node - <<'JS'
const fs = require("fs");
const p = JSON.parse(fs.readFileSync("package.json", "utf8"));
if (!String(p.dependencies["argo-ui"]).startsWith("git+https://github.com/argoproj/argo-ui.git#")) {
  throw new Error(`unexpected argo-ui dependency: ${p.dependencies["argo-ui"]}`);
}
p.dependencies["argo-ui"] = "1.0.0";
p.dependencies["uuid"] = "^3.4.0";
p.dependencies = Object.fromEntries(Object.entries(p.dependencies).sort(([a], [b]) => a.localeCompare(b)));
fs.writeFileSync("package.json", JSON.stringify(p, null, 4) + "\n");
JS
patch -p1 --quiet --no-backup-if-mismatch <"$here/yarn.lock.patch"

start=$SECONDS
nice "$yarn" install --network-timeout 600000 --silent >&2
echo "argo-ui: installed in $((SECONDS - start))s" >&2
rm -rf dist
start=$SECONDS
NODE_OPTIONS=--max-old-space-size=2048 nice "$yarn" build >&2
[[ -s dist/app/index.html ]] || { echo "argo-ui: the build left no dist/app/index.html" >&2; exit 1; }
# without the source maps (24 of the 32 MB; a browser needs none of them)
find dist/app -name '*.map' -delete
echo "argo-ui: built in $((SECONDS - start))s ($(du -sh dist/app | cut -f1))" >&2
