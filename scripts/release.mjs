// npm run release: builds dist/rc.libvirt, then makes rc-libvirt-VERSION.tar.gz, the source tarball
// the SlackBuild takes (the SBo way: downloaded next to it). The tarball holds the files git tracks
// plus the prebuilt dist/rc.libvirt, so the SlackBuild needs neither npm nor node_modules nor network.
// It is reproducible: entries sorted by name, every mtime the date of the last commit of what it holds
// (or SOURCE_DATE_EPOCH), owner and group 0 (numeric), modes normalized, gzip without name or date.
// slackbuild/rc-libvirt.info is left out, so writing the tarball's md5 into it changes nothing in
// the tarball. Prints the md5 and sha256, and writes the md5 (MD5SUM) into the .info.
//
//   node scripts/release.mjs [--out DIR] [--info FILE] [--no-build]
//     --out DIR    where the tarball goes (default: dist)
//     --info FILE  the .info that gets MD5SUM (default: slackbuild/rc-libvirt.info)
//     --no-build   package the dist/rc.libvirt already built
import { $, fs, path } from 'zx';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';

const root = path.resolve(import.meta.dirname, '..');
const INFO_IN_REPO = 'slackbuild/rc-libvirt.info';

// What stops the release: its message is printed, and the exit code is CODE.
class ReleaseError extends Error {
  constructor(message, code = 1) {
    super(message);
    this.code = code;
  }
}
function fail(message, code = 1) {
  throw new ReleaseError(message, code);
}

// Run ARGV (no shell) in the repository; a failure stops the release naming the command and its output.
async function run(argv, opts = {}) {
  const out = await $({ cwd: root, quiet: true, nothrow: true, ...opts })`${argv}`;
  if (out.exitCode !== 0) {
    const said = `${out.stderr}${out.stdout}`.trim();
    fail(`"${argv.join(' ')}" failed (exit ${out.exitCode ?? out.signal})${said ? `:\n${said}` : ', and said nothing'}`, 1);
  }
  return out.stdout;
}

function parseArgs(argv) {
  const args = { out: path.join(root, 'dist'), info: path.join(root, INFO_IN_REPO), build: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined || v === '') fail(`${a} needs a value`, 2);
      return path.resolve(v);
    };
    if (a === '--out') args.out = value();
    else if (a === '--info') args.info = value();
    else if (a === '--no-build') args.build = false;
    else fail(`unknown argument ${a} (usage: release.mjs [--out DIR] [--info FILE] [--no-build])`, 2);
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const version = JSON.parse(await fs.readFile(path.join(root, 'package.json'), 'utf8')).version;
  const name = `rc-libvirt-${version}`;

  // The SlackBuild and the .info carry the version too: a release with three versions helps nobody.
  const slackbuildText = await fs.readFile(path.join(root, 'slackbuild/rc-libvirt.SlackBuild'), 'utf8');
  if (!slackbuildText.includes(`VERSION=\${VERSION:-${version}}`)) {
    fail(`slackbuild/rc-libvirt.SlackBuild does not default to VERSION ${version} (package.json): update it`);
  }
  let info;
  try {
    info = await fs.readFile(args.info, 'utf8');
  } catch (err) {
    fail(`cannot read ${args.info}: ${err.message}`);
  }
  if (!info.includes(`VERSION="${version}"`)) fail(`${args.info} does not say VERSION="${version}" (package.json): update it`);
  if (!/^MD5SUM=".*"$/m.test(info)) fail(`${args.info} has no MD5SUM="..." line`);

  if (args.build) await run(['npm', 'run', 'build']);
  const bundle = path.join(root, 'dist/rc.libvirt');
  if (!(await fs.pathExists(bundle))) fail('dist/rc.libvirt is missing: run "npm run build" (or leave out --no-build)');
  if (!(await fs.readFile(bundle, 'utf8')).startsWith('#!/usr/bin/env node')) fail('dist/rc.libvirt is not the bundled program');

  // The sources: what git tracks, as it is in the working tree, but the .info.
  const tracked = (await run(['git', 'ls-files', '-z'])).split('\0').filter((f) => f !== '' && f !== INFO_IN_REPO);
  const missing = [];
  for (const f of tracked) if (!(await fs.pathExists(path.join(root, f)))) missing.push(f);
  if (missing.length > 0) fail(`tracked files missing from the working tree (restore or commit their removal): ${missing.join(', ')}`);
  const changed = (await run(['git', 'status', '--porcelain', '--untracked-files=no'])).trim();
  if (changed !== '') process.stderr.write(`release: warning: uncommitted changes go into the tarball:\n${changed}\n`);

  // The date of the last commit that changed what the tarball holds: committing the .info with its
  // new md5 changes nothing in the next release.
  const epochText = process.env.SOURCE_DATE_EPOCH ?? (await run(['git', 'log', '-1', '--format=%ct', '--', '.', `:(exclude)${INFO_IN_REPO}`])).trim();
  if (!/^\d+$/.test(epochText)) fail(`SOURCE_DATE_EPOCH must be whole seconds since 1970, got "${epochText}"`);

  const stage = await fs.mkdtemp(path.join(tmpdir(), 'rc-libvirt-release-'));
  try {
    const top = path.join(stage, name);
    for (const f of tracked) await fs.copy(path.join(root, f), path.join(top, f), { dereference: false });
    // The program as the build made it, and the package.json that lets Node.js run it from dist/.
    await fs.copy(bundle, path.join(top, 'dist/rc.libvirt'));
    await fs.copy(path.join(root, 'dist/package.json'), path.join(top, 'dist/package.json'));

    const tar = path.join(stage, `${name}.tar`);
    await run([
      'tar', '--sort=name', '--format=gnu', `--mtime=@${epochText}`,
      '--owner=0', '--group=0', '--numeric-owner', '--mode=u+rw,go-w,a+rX',
      '-C', stage, '-cf', tar, name,
    ]);
    await run(['gzip', '-9', '-n', tar]);
    await fs.mkdirp(args.out);
    const target = path.join(args.out, `${name}.tar.gz`);
    await fs.copy(`${tar}.gz`, target);

    const bytes = await fs.readFile(target);
    const md5 = createHash('md5').update(bytes).digest('hex');
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    await fs.writeFile(args.info, info.replace(/^MD5SUM=".*"$/m, `MD5SUM="${md5}"`));
    console.log(`${target}`);
    console.log(`md5     ${md5}`);
    console.log(`sha256  ${sha256}`);
    console.log(`MD5SUM written into ${args.info}`);
  } finally {
    await fs.remove(stage);
  }
}

try {
  await main();
} catch (err) {
  if (!(err instanceof ReleaseError)) throw err;
  process.stderr.write(`release: ${err.message}\n`);
  process.exitCode = err.code;
}
