r"""A lent GPU's benchmark folder (launch/gpu_benchmark.sh) as one markdown report.

  python -m okdhp_jax.tools.gpu_report gpu_results
  python -m okdhp_jax.tools.gpu_report gpu_results --described described.json --readme README.md

Reads the folder's run.jsonl (the machine, each step's status), rows.jsonl (bench_step rows),
torch.jsonl (bench_torch rows) and program_local.json (gpu_program --gpu local) and prints:
the bench_step table (config, devices, dtype, global batch, img/s, step ms, TFLOP/s, MFU, first
call, peak memory; XLA_FLAGS under it), the steps not measured and why, the profiled row's
busy and launch times, PyTorch's rows beside JAX's, the GPU's own compiled-program counts beside
the described GPU's (`--described`: a `gpu_program --json` file made on a CPU machine; default
the folder's program_described.json when there is one) and issue 35's goals against the
measurements. `--readme FILE` writes the same report into FILE between the lines
`<!-- gpu-table:begin -->` and `<!-- gpu-table:end -->`, leaving the rest of FILE as it was.
"""

from __future__ import annotations

import argparse
import json
import os

from okdhp_jax.tools import bench_step, gpu_program, profile_summary

BEGIN = '<!-- gpu-table:begin -->'
END = '<!-- gpu-table:end -->'
RUN, ROWS, TORCH = 'run.jsonl', 'rows.jsonl', 'torch.jsonl'
PROGRAM, DESCRIBED = 'program_local.json', 'program_described.json'
# Issue 35's goals for OKDHP-HG4 bfloat16 at global batch 64 on one H100 or H200: the paper's
# 150-epoch MPII schedule in an hour, 1.3x PyTorch under autocast + channels_last, a first
# call under a minute.
GOAL_CONFIG, GOAL_BATCH = 'configs/hg4.py', 64
GOAL_IMG_PER_S, GOAL_TORCH_RATIO, GOAL_FIRST_CALL_S = 930.0, 1.3, 60.0


def read_jsonl(path: str) -> list[dict]:
  """The JSON lines of `path` ([] when it does not exist); a line cut off by a kill is left out."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except ValueError:
        if line.endswith('\n'):
          raise ValueError(f'{path}, line {number} is not JSON') from None
  return records


def load_folder(folder: str, described: str | None = None) -> dict:
  """{'env', 'steps', 'rows', 'torch', 'program', 'described'} of a results folder; the last
  status of each step (a folder run twice keeps both runs' lines)."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'{folder} is not a folder')
  run = read_jsonl(os.path.join(folder, RUN))
  envs = [r['env'] for r in run if 'env' in r]
  steps = {r['step']: r for r in run if 'step' in r}
  described = described or os.path.join(folder, DESCRIBED)
  return {'env': envs[-1] if envs else {}, 'steps': steps,
          'rows': read_jsonl(os.path.join(folder, ROWS)),
          'torch': read_jsonl(os.path.join(folder, TORCH)),
          'program': _read_json(os.path.join(folder, PROGRAM)),
          'described': _read_json(described)}


def _read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    try:
      return json.load(f)
    except ValueError as error:
      raise ValueError(f'{path} is not JSON ({error})') from None


def heading(results: dict) -> str:
  """'On 1 x NVIDIA H100 80GB HBM3 (2026-12-07; jax 0.11.2, ...; launch/gpu_benchmark.sh):'"""
  env = results['env']
  devices = sorted({row['devices'] for row in results['rows'] if 'devices' in row})
  where = ', '.join(devices) or env.get('torch_cuda') or 'an unknown device'
  versions = env.get('versions', {})
  named = [f'{name} {versions[name]}' for name in ('jax', 'flax', 'torch') if versions.get(name)]
  details = '; '.join(filter(None, [env.get('date', '')[:10], ', '.join(named)]))
  return (f'On {where} ({details + "; " if details else ""}synthetic batches; '
          '`launch/gpu_benchmark.sh`, each row in a fresh process):')


def bench_table(results: dict) -> str:
  """bench_step's table of the folder's rows (a profiled row marked), or a line saying none."""
  rows = []
  for row in results['rows']:
    if (row.get('request') or {}).get('profile'):
      row = dict(row, config=f'{row["config"]} (profiled)')
    rows.append(row)
  if not rows:
    return 'No bench_step row was measured.'
  return bench_step.format_rows(rows)


def not_measured(results: dict) -> str:
  """'Not measured: okdhp_b128 (skipped: needs ~240s, 60s left), ...' or ''."""
  missed = [f'{name} ({step["status"]}{": " + step["note"] if step.get("note") else ""})'
            for name, step in results['steps'].items() if step['status'] != 'ran']
  return f'Not measured: {", ".join(missed)}.' if missed else ''


def profile_line(results: dict) -> str:
  """The profiled row's first summary sentence (busy time, launch time), or ''."""
  for row in results['rows']:
    if row.get('profile'):
      summary = profile_summary.format_summary(row['profile'], row.get('step_ms'))
      return (f'Profiled ({row["config"]}, {row["dtype"]}, global batch {row["batch"]}): '
              + summary.splitlines()[0])
  return ''


def torch_table(results: dict) -> str:
  """PyTorch's rows beside JAX's at the same global batch, or ''."""
  if not results['torch']:
    return ''
  lines = ['| network | PyTorch precision | global batch | PyTorch ms/step | PyTorch img/s | '
           'JAX ms/step | JAX speed / PyTorch |', '|---|---|---:|---:|---:|---:|---:|']
  for row in results['torch']:
    precision = ('bfloat16 autocast' if row.get('dtype') == 'bfloat16' else 'float32')
    if row.get('channels_last'):
      precision += ', channels_last'
    jax_ms = row.get('jax_ms')
    jax_cell = (f'{jax_ms:.1f}' if jax_ms else
                f'failed: {row["jax_error"]}' if 'jax_error' in row else 'not measured')
    ratio = f'{row["torch_ms"] / jax_ms:.2f}x' if jax_ms else ''
    lines.append(f'| {row["config"]} | {precision} | {row["batch"]} | {row["torch_ms"]:.1f} | '
                 f'{row["batch"] * 1e3 / row["torch_ms"]:.1f} | {jax_cell} | {ratio} |')
  first = results['torch'][0]
  return (f'PyTorch {first.get("torch_version", "?")} eager on {first.get("torch_device", "?")} '
          f'(the released networks, okdhp_jax/models/torch_reference.py; JAX: its bfloat16 '
          f'bench_step row without XLA_FLAGS):\n\n' + '\n'.join(lines))


def program_table(results: dict) -> str:
  """The GPU's own compiled program beside the described GPU's (same config, dtype, batch), or
  ''. Columns: quantity, this GPU, the described one."""
  program = results['program']
  if not program or not program.get('rows'):
    return ''
  local = program['rows'][0]
  columns = [(_program_label(program), local)]
  described = results['described']
  match = next((row for row in (described or {}).get('rows', [])
                if (os.path.basename(row['config']), row['dtype'], row['batch'])
                == (os.path.basename(local['config']), local['dtype'], local['batch'])), None)
  if match is not None:
    columns.append((_program_label(described), match))
  lines = ['| ' + ' | '.join([f'{local["config"]} {local["dtype"]} b{local["batch"]}',
                              *(name for name, _ in columns)]) + ' |',
           '|---|' + '---:|' * len(columns)]
  for label, value in gpu_program.ROWS:
    cells = [gpu_program.format_count(value, row) for _, row in columns]
    lines.append(f'| {label.replace("  ", "&nbsp;&nbsp;")} | ' + ' | '.join(cells) + ' |')
  flags = {program.get('xla_flags', '')} | ({described.get('xla_flags', '')} if match else set())
  note = (f'\n\nXLA_FLAGS: {" / ".join(sorted(f or "none" for f in flags))}'
          if any(flags) else '')
  missing = '' if match is not None else '\n\n(No described counts for the same config given.)'
  return ("The train step's compiled program, counted by gpu_program:\n\n" + '\n'.join(lines)
          + note + missing)


def _program_label(counts: dict) -> str:
  """'NVIDIA H100 80GB HBM3 (on the GPU)' or '... (described: h100)' for a gpu_program --json."""
  device = counts.get('device') or counts.get('gpu')
  gpu = counts.get('gpu')
  return f'{device} ({"on the GPU" if gpu == "local" else f"described: {gpu}"})'


def goals(results: dict) -> str:
  """Issue 35's goals against the folder's OKDHP-HG4 bfloat16 batch-64 rows, or ''."""
  rows = [row for row in results['rows'] if row.get('config') == GOAL_CONFIG
          and row.get('dtype') == 'bfloat16' and row.get('batch') == GOAL_BATCH
          and 'error' not in row and not (row.get('request') or {}).get('profile')]
  if not rows:
    return ''
  best = max(rows, key=lambda row: row['img_per_s'])
  flags = (best.get('request') or {}).get('xla_flags') or 'no XLA_FLAGS'
  lines = [f'- {best["img_per_s"]:.1f} img/s ({flags}) against the goal of at least '
           f'{GOAL_IMG_PER_S:.0f} ({best["img_per_s"] / GOAL_IMG_PER_S:.0%} of it).']
  first = min(rows, key=lambda row: row['first_call_s'])
  lines.append(f'- First call {first["first_call_s"]:.1f} s against the goal of under '
               f'{GOAL_FIRST_CALL_S:.0f} s.')
  torch_rows = [row for row in results['torch'] if row.get('config') == GOAL_CONFIG
                and row.get('dtype') == 'bfloat16' and row.get('channels_last')
                and row.get('batch') == GOAL_BATCH]
  if torch_rows:
    torch_ms = torch_rows[-1]['torch_ms']
    ratio = torch_ms * best['img_per_s'] / (GOAL_BATCH * 1e3)
    lines.append(f'- {ratio:.2f}x PyTorch under bfloat16 autocast + channels_last '
                 f'({torch_ms:.1f} ms/step) against the goal of at least {GOAL_TORCH_RATIO}x.')
  return (f'Against issue 35\'s goals ({GOAL_CONFIG}, bfloat16, global batch {GOAL_BATCH}):\n'
          + '\n'.join(lines))


def report(results: dict) -> str:
  """The whole report: heading, tables and notes, separated by blank lines."""
  parts = [heading(results), bench_table(results), not_measured(results),
           profile_line(results), torch_table(results), program_table(results), goals(results)]
  return '\n\n'.join(part for part in parts if part)


def replace_region(text: str, content: str, where: str = 'the file') -> str:
  """`text` with what lies between its BEGIN and END marker lines replaced by `content`;
  ValueError naming `where` unless each marker is there once, BEGIN first."""
  if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
    raise ValueError(f'{where} needs one {BEGIN} line and, after it, one {END} line '
                     f'(found {text.count(BEGIN)} and {text.count(END)})')
  head, rest = text.split(BEGIN)
  _, tail = rest.split(END)
  return f'{head}{BEGIN}\n{content.strip()}\n{END}{tail}'


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('results', help='the folder launch/gpu_benchmark.sh wrote (--out)')
  parser.add_argument('--described', default=None, metavar='FILE',
                      help='gpu_program --json counts of a described GPU to set beside the '
                           f"device's own (default: RESULTS/{DESCRIBED} when it exists)")
  parser.add_argument('--readme', default=None, metavar='FILE',
                      help=f'also write the report into FILE between {BEGIN} and {END}')
  args = parser.parse_args(argv)
  if args.described and not os.path.isfile(args.described):
    parser.error(f'--described {args.described} is not a file')
  try:
    text = report(load_folder(args.results, args.described))
  except (OSError, ValueError) as error:
    raise SystemExit(f'gpu_report: error: {error}') from None
  except KeyError as error:
    raise SystemExit(f'gpu_report: error: {args.results}: a record lacks {error}') from None
  print(text)
  if args.readme:
    try:
      with open(args.readme, encoding='utf-8') as f:
        readme = f.read()
      updated = replace_region(readme, text, args.readme)
    except (OSError, ValueError) as error:
      raise SystemExit(f'gpu_report: error: {error}') from None
    with open(args.readme, 'w', encoding='utf-8') as f:
      f.write(updated)
    print(f'\n(written into {args.readme} between its gpu-table markers)')


if __name__ == '__main__':
  main()
