/**
 * A small grammar AST that renders to GBNF, llama.cpp's grammar language. Pure; the tests render the same nodes as
 * regular expressions to check what a rule accepts (docs/architecture.md, "Structured output").
 */
export type GrammarNode =
    | {kind: 'literal', text: string}
    /** A character class body, e.g. `1-9` or `^"\\`. */
    | {kind: 'class', body: string}
    | {kind: 'sequence', items: GrammarNode[]}
    | {kind: 'choice', options: GrammarNode[]}
    | {kind: 'repeat', item: GrammarNode, min: number, max: number | null}
    | {kind: 'rule', name: string};

export const literal = (text: string): GrammarNode => ({kind: 'literal', text});
export const charClass = (body: string): GrammarNode => ({kind: 'class', body});
export const rule = (name: string): GrammarNode => ({kind: 'rule', name});

export function sequence(...items: GrammarNode[]): GrammarNode {
    const flat = items.flatMap((item) => item.kind === 'sequence' ? item.items : [item]).filter((item) => !(item.kind === 'literal' && item.text === ''));
    return flat.length === 1 ? flat[0]! : {kind: 'sequence', items: flat};
}

export function choice(...options: GrammarNode[]): GrammarNode {
    const flat = options.flatMap((option) => option.kind === 'choice' ? option.options : [option]);
    return flat.length === 1 ? flat[0]! : {kind: 'choice', options: flat};
}

export function repeat(item: GrammarNode, min: number, max: number | null): GrammarNode {
    if (min === 1 && max === 1)
        return item;
    return {kind: 'repeat', item, min, max};
}

export const optional = (item: GrammarNode) => repeat(item, 0, 1);

/** A GBNF string literal: quotes, backslashes and control characters escaped. */
function gbnfLiteral(text: string) {
    const escaped = [...text].map((character) => {
        if (character === '"' || character === '\\')
            return `\\${character}`;
        const code = character.charCodeAt(0);
        return code < 0x20 ? `\\x${code.toString(16).padStart(2, '0')}` : character;
    });
    return `"${escaped.join('')}"`;
}

export function toGbnf(node: GrammarNode): string {
    switch (node.kind) {
        case 'literal':
            return gbnfLiteral(node.text);
        case 'class':
            return `[${node.body}]`;
        case 'rule':
            return node.name;
        case 'sequence':
            return node.items.map((item) => item.kind === 'choice' ? `(${toGbnf(item)})` : toGbnf(item)).join(' ');
        case 'choice':
            return node.options.map(toGbnf).join(' | ');
        case 'repeat': {
            const inner = node.item.kind === 'literal' || node.item.kind === 'class' || node.item.kind === 'rule' ? toGbnf(node.item) : `(${toGbnf(node.item)})`;
            if (node.min === 0 && node.max === 1)
                return `${inner}?`;
            if (node.min === 0 && node.max === null)
                return `${inner}*`;
            if (node.min === 1 && node.max === null)
                return `${inner}+`;
            return `${inner}{${node.min},${node.max ?? ''}}`;
        }
    }
}

/** `node` with every rule reference renamed by `rename` (to put several grammars' rules in one grammar). */
export function renameRules(node: GrammarNode, rename: (name: string) => string): GrammarNode {
    switch (node.kind) {
        case 'rule':
            return rule(rename(node.name));
        case 'sequence':
            return {kind: 'sequence', items: node.items.map((item) => renameRules(item, rename))};
        case 'choice':
            return {kind: 'choice', options: node.options.map((option) => renameRules(option, rename))};
        case 'repeat':
            return {...node, item: renameRules(node.item, rename)};
        default:
            return node;
    }
}

/** Rules as a GBNF grammar, `root` first. */
export function rulesToGbnf(rules: ReadonlyMap<string, GrammarNode>): string {
    const root = rules.get('root');
    if (root === undefined)
        throw new Error('a grammar needs a root rule');
    return [`root ::= ${toGbnf(root)}`, ...[...rules].filter(([name]) => name !== 'root').map(([name, node]) => `${name} ::= ${toGbnf(node)}`)].join('\n');
}
