import type {GrammarNode} from '../core/json-schema/grammar-node.js';

/** Renders a grammar node as a regular expression (rules looked up in `rules`, inlined up to a depth): what it accepts, for tests. */
export function grammarRegExp(node: GrammarNode, rules: Map<string, GrammarNode> = new Map(), depth = 3): RegExp {
    return new RegExp(`^(?:${source(node, rules, depth)})$`, 'u');
}

function source(node: GrammarNode, rules: Map<string, GrammarNode>, depth: number): string {
    switch (node.kind) {
        case 'literal':
            return node.text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
        case 'class':
            // GBNF's \UXXXXXXXX is \u{…} here; past U+10FFFF there is nothing for a JavaScript string to hold.
            return `[${node.body.replace(/\\U([0-9a-fA-F]{8})/g, (_, hex: string) => `\\u{${Math.min(Number.parseInt(hex, 16), 0x10ffff).toString(16)}}`)}]`;
        case 'sequence':
            return node.items.map((item) => source(item, rules, depth)).join('');
        case 'choice':
            return `(?:${node.options.map((option) => source(option, rules, depth)).join('|')})`;
        case 'repeat':
            return `(?:${source(node.item, rules, depth)}){${node.min},${node.max ?? ''}}`;
        case 'rule': {
            const body = rules.get(node.name);
            if (body === undefined)
                throw new Error(`no rule ${node.name}`);
            // Recursive rules (nested values) are cut off at `depth`: deep enough for the values tests write.
            return depth === 0 ? '(?!)' : `(?:${source(body, rules, depth - 1)})`;
        }
    }
}
