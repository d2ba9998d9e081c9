/**
 * QEMU's option-list syntax (`-o key=value,key=value`, util/qemu-option.c), shared by the commands
 * that take creation options (create, convert).
 */

/** is_valid_option_list of qemu-img.c: not empty, no leading comma, no unescaped trailing comma. */
export function isValidOptionList(s: string): boolean {
  if (s === '' || s.startsWith(',')) return false;
  let i = s.length;
  while (i > 0 && s[i - 1] === ',') i--;
  return (s.length - i) % 2 === 0;
}

/**
 * A QemuOpts list as [name, value] pairs in order: `,,` is a literal comma inside a value; a bare
 * `key` means `key=on`, and a bare `nokey` means `key=off` unless `isKnown('nokey')` (an option whose
 * own name starts with "no").
 */
export function splitOptions(list: string, isKnown: (name: string) => boolean): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  let i = 0;
  while (i < list.length) {
    let j = i;
    while (j < list.length && list[j] !== '=' && list[j] !== ',') j++;
    const name = list.slice(i, j);
    if (list[j] !== '=') {
      out.push(name.startsWith('no') && !isKnown(name) ? [name.slice(2), 'off'] : [name, 'on']);
      i = j + 1;
      continue;
    }
    let value = '';
    j++;
    while (j < list.length) {
      if (list[j] === ',') {
        if (list[j + 1] !== ',') break;
        value += ',';
        j += 2;
        continue;
      }
      value += list[j];
      j++;
    }
    out.push([name, value]);
    i = j + 1;
  }
  return out;
}
