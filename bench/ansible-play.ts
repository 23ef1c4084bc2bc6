// The Ansible side of bench/ansible.ts: N local hosts (ansible_connection=local), each with its own app folder,
// and a playbook doing per host what the agent does: stage the release beside the running one, switch the
// `current` symlink, run the release's health script, and on failure switch back and fail the host. Batches
// `serial: [1, "10%", "50%", "100%"]`, `max_fail_percentage: 0`, forks 50, no fact gathering and pipelining on
// (Ansible's fastest settings for this work, so the comparison is against Ansible at its best).
import { execFileSync } from 'node:child_process';
import { mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnGroup } from './ansible-fleet.ts';

const PLAYBOOK = `# Written by bench/ansible.ts: one release to every host, in batches, stopping at the first failure.
- name: roll out a release
  hosts: fleet
  gather_facts: false
  serial: [1, "10%", "50%", "100%"]
  max_fail_percentage: 0
  vars:
    app: "{{ host_dir }}/app"
  tasks:
    - name: remember the running release
      ansible.builtin.stat:
        path: "{{ app }}/current"
      register: running
    - name: stage the release beside the running one
      ansible.builtin.copy:
        src: "{{ release_src }}/"
        dest: "{{ app }}/releases/{{ version }}/"
        mode: preserve
    - name: switch, check, or switch back
      block:
        - name: switch current to the release
          ansible.builtin.file:
            src: "releases/{{ version }}"
            dest: "{{ app }}/current"
            state: link
            force: true
        - name: health script
          ansible.builtin.command:
            cmd: sh current/health.sh
            chdir: "{{ app }}"
      rescue:
        - name: switch back to the running release
          ansible.builtin.file:
            src: "{{ running.stat.lnk_target }}"
            dest: "{{ app }}/current"
            state: link
            force: true
          when: running.stat.islnk is defined and running.stat.islnk
        - name: fail the host
          ansible.builtin.fail:
            msg: "health check of {{ version }} failed; switched back"
`;

/** The `ansible-playbook` version line, or null when it is not installed. */
export function ansibleVersion(): string | null {
  try {
    return execFileSync('ansible-playbook', ['--version'], { encoding: 'utf8' }).split('\n')[0].trim();
  } catch {
    return null;
  }
}

/** Ansible's batch sizes for serial [1, "10%", "50%", "100%"] over n hosts (its pct_to_int: floor, at least 1). */
export function ansibleBatches(n: number): number[] {
  const out: number[] = [];
  let left = n;
  for (const size of [1, Math.max(1, Math.floor(n * 0.1)), Math.max(1, Math.floor(n * 0.5)), n]) {
    if (left <= 0) break;
    out.push(Math.min(size, left));
    left -= size;
  }
  return out;
}

export interface AnsibleHosts {
  dir: string;
  appDirs: string[];
}

/** Writes the inventory, the playbook and N empty host folders under `dir`. */
export function prepareAnsible(dir: string, n: number): AnsibleHosts {
  const appDirs: string[] = [];
  const lines = ['[fleet]'];
  for (let i = 0; i < n; i++) {
    const host = join(dir, 'hosts', `host-${i}`);
    mkdirSync(join(host, 'app'), { recursive: true });
    appDirs.push(join(host, 'app'));
    lines.push(`host-${i} host_dir=${host}`);
  }
  lines.push(
    '',
    '[fleet:vars]',
    'ansible_connection=local',
    'ansible_python_interpreter=/usr/bin/python3',
    '',
  );
  writeFileSync(join(dir, 'inventory.ini'), lines.join('\n'));
  writeFileSync(join(dir, 'rollout.yml'), PLAYBOOK);
  mkdirSync(join(dir, 'home'), { recursive: true });
  return { dir, appDirs };
}

/** Runs the playbook for one release and times it, from the command's start to its exit. */
export async function timedPlaybook(
  h: AnsibleHosts,
  version: string,
  releaseDir: string,
  ceilingMs: number,
): Promise<{ seconds: number; exit: number }> {
  const log = join(h.dir, `ansible-${version}.log`);
  const fd = openSync(log, 'a');
  const t0 = performance.now();
  const p = spawnGroup(
    'ansible-playbook',
    [
      '-i',
      join(h.dir, 'inventory.ini'),
      join(h.dir, 'rollout.yml'),
      '-f',
      '50',
      '-e',
      `version=${version}`,
      '-e',
      `release_src=${releaseDir}`,
    ],
    {
      stdio: ['ignore', fd, fd],
      cwd: h.dir,
      env: {
        ...process.env,
        ANSIBLE_HOME: join(h.dir, 'home'),
        ANSIBLE_LOCAL_TEMP: join(h.dir, 'home', 'tmp'),
        ANSIBLE_REMOTE_TMP: join(h.dir, 'home', 'remote-tmp'),
        ANSIBLE_FORKS: '50',
        ANSIBLE_PIPELINING: 'True',
        ANSIBLE_HOST_KEY_CHECKING: 'False',
        ANSIBLE_RETRY_FILES_ENABLED: 'False',
        ANSIBLE_NOCOLOR: '1',
      },
    },
  );
  const timer = setTimeout(() => {
    try {
      process.kill(-p.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  }, ceilingMs);
  const exit = await new Promise<number>((r) => p.once('exit', (code) => r(code ?? -1)));
  clearTimeout(timer);
  const seconds = (performance.now() - t0) / 1000;
  if (exit === -1)
    throw new Error(`ansible-playbook for ${version} killed after ${ceilingMs / 1000} s; see ${log}`);
  return { seconds, exit };
}
