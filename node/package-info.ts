import {readFileSync} from 'node:fs';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';

/** strongdoge's own package.json, found upward from this file (it sits at a different depth in dist/). */
function readOwnPackageJson(): {name: string, version: string} {
    let dir = dirname(fileURLToPath(import.meta.url));
    for (;;) {
        try {
            const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
            if (pkg.name === 'strongdoge')
                return pkg;
        } catch {
            // not here: keep walking up
        }
        const parent = dirname(dir);
        if (parent === dir)
            return {name: 'strongdoge', version: '0.0.0'};
        dir = parent;
    }
}

export const packageInfo = readOwnPackageJson();
