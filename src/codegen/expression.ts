/**
 * The subset of the Kaitai Struct expression language spec/qcow2.ksy uses: integer and boolean
 * literals, names, `enum::label`, member access (`a.b`, `_io.size`, `.to_i`), unary `-` `~` `not`,
 * binary `* / % + - << >> & | ^ < <= > >= == != and or`, and `c ? a : b`. Anything else is refused
 * with a message that names the expression and the position.
 *
 * Semantics follow kaitai-struct-compiler's JavaScript output, so both parsers compute the same
 * numbers: `>>` is an unsigned 32-bit shift, `<<` `&` `|` `^` `~` are 32-bit, `%` is the
 * non-negative modulo, `/` on integers is floor division.
 */
import { kaitaiMod } from '../codec/index.ts';

export type Expr =
  | { readonly k: 'num'; readonly v: number }
  | { readonly k: 'bool'; readonly v: boolean }
  | { readonly k: 'name'; readonly name: string }
  | { readonly k: 'enum'; readonly enumName: string; readonly label: string }
  | { readonly k: 'member'; readonly obj: Expr; readonly name: string }
  | { readonly k: 'unary'; readonly op: '-' | '~' | 'not'; readonly e: Expr }
  | { readonly k: 'binary'; readonly op: BinaryOp; readonly l: Expr; readonly r: Expr }
  | { readonly k: 'ternary'; readonly c: Expr; readonly t: Expr; readonly f: Expr };

export type BinaryOp =
  | '*' | '/' | '%' | '+' | '-' | '<<' | '>>' | '&' | '|' | '^'
  | '<' | '<=' | '>' | '>=' | '==' | '!=' | 'and' | 'or';

/** Thrown for expressions outside the supported subset. */
export class ExpressionError extends Error {
  override readonly name = 'ExpressionError';
}

type Token = { t: 'num'; v: number } | { t: 'id'; v: string } | { t: 'op'; v: string } | { t: 'end' };

const OPS = ['::', '<<', '>>', '<=', '>=', '==', '!=', '<', '>', '+', '-', '*', '/', '%', '&', '|', '^', '~', '?', ':', '(', ')', '.'];

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const ch = src[i]!;
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    const num = /^(0x[0-9a-fA-F_]+|0b[01_]+|[0-9][0-9_]*)/.exec(src.slice(i));
    if (num) {
      const text = num[1]!.replace(/_/g, '');
      const v = text.startsWith('0b') ? parseInt(text.slice(2), 2) : Number(text);
      if (!Number.isSafeInteger(v)) throw new ExpressionError(`integer literal ${num[1]} in '${src}' is not exact in a double`);
      out.push({ t: 'num', v });
      i += num[1]!.length;
      continue;
    }
    const id = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(src.slice(i));
    if (id) {
      out.push({ t: 'id', v: id[0] });
      i += id[0].length;
      continue;
    }
    const op = OPS.find((o) => src.startsWith(o, i));
    if (!op) throw new ExpressionError(`unsupported character '${ch}' at ${i} in expression '${src}'`);
    out.push({ t: 'op', v: op });
    i += op.length;
  }
  out.push({ t: 'end' });
  return out;
}

const BINARY_LEVELS: readonly (readonly string[])[] = [
  ['or'],
  ['and'],
  ['<', '<=', '>', '>=', '==', '!='],
  ['|'],
  ['^'],
  ['&'],
  ['<<', '>>'],
  ['+', '-'],
  ['*', '/', '%'],
];

/** Parses a Kaitai expression (a YAML number or boolean is accepted as a literal). */
export function parseExpression(source: string | number | boolean): Expr {
  if (typeof source === 'number') {
    if (!Number.isSafeInteger(source)) throw new ExpressionError(`number ${source} is not an exact integer`);
    return { k: 'num', v: source };
  }
  if (typeof source === 'boolean') return { k: 'bool', v: source };
  const src = String(source);
  const toks = tokenize(src);
  let pos = 0;
  const peek = (): Token => toks[pos]!;
  const isOp = (v: string): boolean => {
    const t = peek();
    return (t.t === 'op' || t.t === 'id') && t.v === v;
  };
  const expect = (v: string): void => {
    if (!isOp(v)) throw new ExpressionError(`expected '${v}' at token ${pos} in expression '${src}'`);
    pos++;
  };

  const ternary = (): Expr => {
    const c = binary(0);
    if (isOp('?')) {
      pos++;
      const t = ternary();
      expect(':');
      const f = ternary();
      return { k: 'ternary', c, t, f };
    }
    return c;
  };
  const binary = (level: number): Expr => {
    if (level === 2) {
      // `not` binds looser than comparisons, tighter than `and`.
      if (isOp('not')) {
        pos++;
        return { k: 'unary', op: 'not', e: binary(2) };
      }
    }
    if (level >= BINARY_LEVELS.length) return unary();
    let l = binary(level + 1);
    for (;;) {
      const t = peek();
      const ops = BINARY_LEVELS[level]!;
      if ((t.t === 'op' || t.t === 'id') && ops.includes(t.v)) {
        pos++;
        const r = binary(level + 1);
        l = { k: 'binary', op: t.v as BinaryOp, l, r };
      } else {
        return l;
      }
    }
  };
  const unary = (): Expr => {
    if (isOp('-')) {
      pos++;
      return { k: 'unary', op: '-', e: unary() };
    }
    if (isOp('~')) {
      pos++;
      return { k: 'unary', op: '~', e: unary() };
    }
    return postfix();
  };
  const postfix = (): Expr => {
    let e = primary();
    while (isOp('.')) {
      pos++;
      const t = peek();
      if (t.t !== 'id') throw new ExpressionError(`expected a name after '.' in expression '${src}'`);
      pos++;
      e = { k: 'member', obj: e, name: t.v };
    }
    return e;
  };
  const primary = (): Expr => {
    const t = peek();
    if (t.t === 'num') {
      pos++;
      return { k: 'num', v: t.v };
    }
    if (t.t === 'op' && t.v === '(') {
      pos++;
      const e = ternary();
      expect(')');
      return e;
    }
    if (t.t === 'id') {
      pos++;
      if (t.v === 'true' || t.v === 'false') return { k: 'bool', v: t.v === 'true' };
      if (isOp('::')) {
        pos++;
        const label = peek();
        if (label.t !== 'id') throw new ExpressionError(`expected an enum label after '::' in expression '${src}'`);
        pos++;
        return { k: 'enum', enumName: t.v, label: label.v };
      }
      return { k: 'name', name: t.v };
    }
    throw new ExpressionError(`unexpected ${t.t === 'end' ? 'end' : `'${(t as { v: unknown }).v}'`} in expression '${src}'`);
  };

  const e = ternary();
  if (peek().t !== 'end') throw new ExpressionError(`unexpected trailing input in expression '${src}'`);
  return e;
}

/** Every plain name the expression refers to at top level (`a` in `a.b + c`, also `_io`, `_root`). */
export function namesIn(e: Expr): Set<string> {
  const out = new Set<string>();
  const walk = (x: Expr): void => {
    switch (x.k) {
      case 'name':
        out.add(x.name);
        break;
      case 'member':
        walk(x.obj);
        break;
      case 'unary':
        walk(x.e);
        break;
      case 'binary':
        walk(x.l);
        walk(x.r);
        break;
      case 'ternary':
        walk(x.c);
        walk(x.t);
        walk(x.f);
        break;
      default:
        break;
    }
  };
  walk(e);
  return out;
}

/** How to turn names and members into values, for `evaluate`. */
export interface EvalEnv {
  name(name: string): unknown;
  member(obj: unknown, name: string): unknown;
  enumValue(enumName: string, label: string): number;
}

/** Evaluates `e` with the same semantics as the emitted TypeScript and Kaitai's JavaScript. */
export function evaluate(e: Expr, env: EvalEnv): unknown {
  const num = (x: Expr): number => {
    const v = evaluate(x, env);
    if (typeof v === 'boolean') return v ? 1 : 0;
    if (typeof v !== 'number') throw new ExpressionError(`expected a number, got ${typeof v}`);
    return v;
  };
  switch (e.k) {
    case 'num':
    case 'bool':
      return e.v;
    case 'name':
      return env.name(e.name);
    case 'enum':
      return env.enumValue(e.enumName, e.label);
    case 'member':
      return env.member(evaluate(e.obj, env), e.name);
    case 'unary':
      if (e.op === 'not') return !evaluate(e.e, env);
      if (e.op === '-') return -num(e.e);
      return ~num(e.e);
    case 'ternary':
      return evaluate(e.c, env) ? evaluate(e.t, env) : evaluate(e.f, env);
    case 'binary': {
      if (e.op === 'and') return Boolean(evaluate(e.l, env)) && Boolean(evaluate(e.r, env));
      if (e.op === 'or') return Boolean(evaluate(e.l, env)) || Boolean(evaluate(e.r, env));
      if (e.op === '==') return evaluate(e.l, env) === evaluate(e.r, env);
      if (e.op === '!=') return evaluate(e.l, env) !== evaluate(e.r, env);
      const a = num(e.l);
      const b = num(e.r);
      switch (e.op) {
        case '*': return a * b;
        case '/': return Math.floor(a / b);
        case '%': return kaitaiMod(a, b);
        case '+': return a + b;
        case '-': return a - b;
        case '<<': return a << b;
        case '>>': return a >>> b;
        case '&': return a & b;
        case '|': return a | b;
        case '^': return a ^ b;
        case '<': return a < b;
        case '<=': return a <= b;
        case '>': return a > b;
        case '>=': return a >= b;
      }
    }
  }
  throw new ExpressionError(`cannot evaluate expression node ${(e as { k: string }).k}`);
}

/** How to turn names and members into TypeScript source, for `toTypeScript`. */
export interface EmitScope {
  name(name: string): string;
  member(obj: Expr, objCode: string, name: string): string;
  enumValue(enumName: string, label: string): string;
}


/** TypeScript source computing `e` (fully parenthesised, so JS precedence never matters). */
export function toTypeScript(e: Expr, scope: EmitScope): string {
  const go = (x: Expr): string => toTypeScript(x, scope);
  switch (e.k) {
    case 'num':
      return String(e.v);
    case 'bool':
      return String(e.v);
    case 'name':
      return scope.name(e.name);
    case 'enum':
      return scope.enumValue(e.enumName, e.label);
    case 'member':
      return scope.member(e.obj, go(e.obj), e.name);
    case 'unary':
      if (e.op === 'not') return `(!${go(e.e)})`;
      return `(${e.op}${go(e.e)})`;
    case 'ternary':
      return `(${go(e.c)} ? ${go(e.t)} : ${go(e.f)})`;
    case 'binary': {
      const l = go(e.l);
      const r = go(e.r);
      switch (e.op) {
        case 'and': return `(${l} && ${r})`;
        case 'or': return `(${l} || ${r})`;
        case '==': return `(${l} === ${r})`;
        case '!=': return `(${l} !== ${r})`;
        case '/': return `Math.floor(${l} / ${r})`;
        case '%': return `kaitaiMod(${l}, ${r})`;
        case '>>': return `(${l} >>> ${r})`;
        default: return `(${l} ${e.op} ${r})`;
      }
    }
  }
}
