/** The surface of the script layer (ARCHITECTURE.md): what the other layers may import from it. */
export { SCRIPT_OP_NAMES, ScriptError, formatScript, parseScript } from './script.ts';
export type { ScriptOpName } from './script.ts';
