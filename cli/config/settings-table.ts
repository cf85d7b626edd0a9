import {
    dataDirSetting, envNameFor, environmentOnlySettings, flagsFor, nodeSettingKeys, settingDeclaration, type NodeSettingKey
} from '../../node/node-settings.js';

/** A table cell's markdown: `|` would end the cell, even inside a code span. */
const code = (text: string) => `\`${text.replaceAll('|', '\\|')}\``;
const noted = (text: string, note: string | undefined) => note === undefined ? text : `${text} (${note})`;

function defaultCell(key: NodeSettingKey) {
    const declaration = settingDeclaration(key);
    const value = declaration.default;
    if (declaration.defaultText !== undefined)
        return declaration.defaultText;
    if (value === undefined || (Array.isArray(value) && value.length === 0))
        return 'none';
    if (typeof value === 'boolean')
        return code(value ? 'on' : 'off');
    return code(String(typeof value === 'function' ? value() : value));
}

/** README's "Configuration" table, rendered from node/node-settings.ts; test/settings-docs.test.ts checks README holds it. */
export function settingsTable() {
    const rows = nodeSettingKeys.map((key) => {
        const {repeatable, note} = settingDeclaration(key);
        return [
            noted(code(flagsFor(key)), [repeatable ? 'repeatable' : undefined, note].filter(Boolean).join('; ') || undefined),
            noted(code(envNameFor(key)), repeatable ? 'comma-separated' : undefined),
            noted(code(key), repeatable ? 'list' : undefined),
            defaultCell(key)
        ];
    });
    rows.push(...environmentOnlySettings.map(({env, note}) => [noted('—', note), code(env), '—', 'none']));
    rows.push([code(dataDirSetting.flags), code(dataDirSetting.env), '—', code(dataDirSetting.default)]);
    return ['| flag | env | `config.json` key | default |', '|---|---|---|---|', ...rows.map((cells) => `| ${cells.join(' | ')} |`)].join('\n');
}
