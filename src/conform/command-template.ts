/**
 * Adapter command templates: how `qcow2-ref conform --reader/--writer TEMPLATE` turns one string into
 * the argument vector of a process, without a shell.
 *
 * Splitting (a small, fixed subset of POSIX shell word splitting, so templates written for a shell
 * mean the same here):
 * - unquoted spaces, tabs and newlines separate arguments;
 * - `'…'` is literal (no escapes inside, as in sh);
 * - `"…"` is literal except that `\"` and `\\` stand for `"` and `\` (any other backslash is kept);
 * - outside quotes, a backslash makes the next character literal;
 * - quoted and unquoted pieces next to each other form one argument (`--out="{raw}"` is one);
 * - `''` or `""` alone is an empty argument.
 * Nothing else is special: no `$VAR`, no globs, no `~`, no `;`, `|`, `>` or `&&`. Anything that needs
 * a shell goes into a script (adapters/*.sh) or is asked for explicitly (`sh -c '…'`).
 *
 * Placeholders: `{name}` inside any argument, quoted or not, is replaced by the value for that case
 * after splitting, so a value containing spaces or quotes stays one argument. `{{` and `}}` are
 * literal braces. An unknown name, a lone `{` or `}`, or an unclosed quote is a TemplateError.
 */

/** The placeholders a template may use. */
export type PlaceholderName = 'image' | 'raw' | 'script' | 'dir' | 'log';

const PLACEHOLDERS: readonly PlaceholderName[] = ['image', 'raw', 'script', 'dir', 'log'];

/** One piece of an argument: literal text, or a placeholder to substitute. */
export type TemplatePart = { readonly kind: 'text'; readonly text: string } | { readonly kind: 'placeholder'; readonly name: PlaceholderName };

/** A parsed template: one list of parts per argument, the program first. */
export interface CommandTemplate {
  /** The template as given. */
  readonly source: string;
  readonly args: readonly (readonly TemplatePart[])[];
}

/** A template that cannot be used; the message says where and why. */
export class TemplateError extends Error {
  override readonly name = 'TemplateError';
}

/**
 * Parses `source` into arguments and placeholders (rules in the module comment). Promises: at least
 * one argument, the first (the program) not empty; every placeholder named in PLACEHOLDERS; throws a
 * TemplateError otherwise.
 */
export function parseTemplate(source: string): CommandTemplate {
  const args: TemplatePart[][] = [];
  let current: TemplatePart[] | undefined; // undefined between arguments
  let text = '';
  const pushText = (s: string): void => {
    current ??= [];
    text += s;
  };
  const flushText = (): void => {
    if (text !== '') current!.push({ kind: 'text', text });
    text = '';
  };
  const endArg = (): void => {
    if (current === undefined) return;
    flushText();
    args.push(current);
    current = undefined;
  };
  const at = (i: number): string => `at character ${i + 1} of ${JSON.stringify(source)}`;
  // Reads a placeholder or escaped brace starting at i (source[i] is '{' or '}'); returns the next index.
  const brace = (i: number): number => {
    const c = source[i]!;
    if (source[i + 1] === c) {
      pushText(c);
      return i + 2;
    }
    if (c === '}') throw new TemplateError(`a lone '}' ${at(i)} (write '}}' for a literal brace)`);
    const close = source.indexOf('}', i + 1);
    const name = close < 0 ? '' : source.slice(i + 1, close);
    if (close < 0 || !/^[a-z]+$/.test(name)) throw new TemplateError(`a lone '{' ${at(i)} (write '{{' for a literal brace)`);
    if (!(PLACEHOLDERS as readonly string[]).includes(name)) {
      throw new TemplateError(`unknown placeholder {${name}} ${at(i)} (known: ${PLACEHOLDERS.map((p) => `{${p}}`).join(', ')})`);
    }
    current ??= [];
    flushText();
    current.push({ kind: 'placeholder', name: name as PlaceholderName });
    return close + 1;
  };

  let i = 0;
  while (i < source.length) {
    const c = source[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      endArg();
      i++;
    } else if (c === '\\') {
      if (i + 1 >= source.length) throw new TemplateError(`a trailing backslash ${at(i)}`);
      pushText(source[i + 1]!);
      i += 2;
    } else if (c === "'") {
      const close = source.indexOf("'", i + 1);
      if (close < 0) throw new TemplateError(`an unclosed single quote ${at(i)}`);
      pushText('');
      // Literal text, but placeholders still apply.
      let j = i + 1;
      while (j < close) {
        const d = source[j]!;
        // A placeholder name is [a-z]+, so one can never reach past the closing quote.
        if (d === '{' || d === '}') j = brace(j);
        else {
          pushText(d);
          j++;
        }
      }
      i = close + 1;
    } else if (c === '"') {
      pushText('');
      let j = i + 1;
      for (;;) {
        if (j >= source.length) throw new TemplateError(`an unclosed double quote ${at(i)}`);
        const d = source[j]!;
        if (d === '"') break;
        if (d === '\\' && (source[j + 1] === '"' || source[j + 1] === '\\')) {
          pushText(source[j + 1]!);
          j += 2;
        } else if (d === '{' || d === '}') {
          j = brace(j);
        } else {
          pushText(d);
          j++;
        }
      }
      i = j + 1;
    } else if (c === '{' || c === '}') {
      i = brace(i);
    } else {
      pushText(c);
      i++;
    }
  }
  endArg();
  if (args.length === 0) throw new TemplateError('the template is empty');
  const program = args[0]!;
  if (program.length === 0 || (program.length === 1 && program[0]!.kind === 'text' && program[0]!.text === '')) {
    throw new TemplateError('the program name (first argument) is empty');
  }
  return { source, args };
}

/** The placeholders `template` uses, each once, in order of first use. */
export function placeholdersOf(template: CommandTemplate): PlaceholderName[] {
  const seen: PlaceholderName[] = [];
  for (const arg of template.args) for (const p of arg) if (p.kind === 'placeholder' && !seen.includes(p.name)) seen.push(p.name);
  return seen;
}

/**
 * Throws a TemplateError unless `template` uses every placeholder in `required` (a reader must name
 * where the image is and where the raw output goes; a writer, the image and the script).
 */
export function requirePlaceholders(template: CommandTemplate, required: readonly PlaceholderName[], role: string): void {
  const used = placeholdersOf(template);
  const missing = required.filter((r) => !used.includes(r));
  if (missing.length > 0) {
    throw new TemplateError(
      `a ${role} template must use ${required.map((r) => `{${r}}`).join(' and ')}; ${JSON.stringify(template.source)} lacks ${missing.map((m) => `{${m}}`).join(', ')}`,
    );
  }
}

/**
 * The argument vector of `template` with every placeholder replaced by its value (each value inserted
 * verbatim into its argument, never split). Throws a TemplateError when a used placeholder has no value.
 */
export function expandTemplate(template: CommandTemplate, values: Readonly<Partial<Record<PlaceholderName, string>>>): string[] {
  return template.args.map((arg) =>
    arg
      .map((p) => {
        if (p.kind === 'text') return p.text;
        const v = values[p.name];
        if (v === undefined) throw new TemplateError(`placeholder {${p.name}} has no value here`);
        return v;
      })
      .join(''),
  );
}
