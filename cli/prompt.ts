import {createInterface} from 'node:readline';
import {Writable} from 'node:stream';

/** Asks for a secret on the terminal without echoing it; undefined when there is no terminal to ask on. */
export async function promptSecret(question: string): Promise<string | undefined> {
    if (!process.stdin.isTTY || !process.stderr.isTTY)
        return undefined;
    let muted = false;
    const output = new Writable({
        write(chunk: Buffer, _encoding, done) {
            if (!muted)
                process.stderr.write(chunk);
            done();
        }
    });
    const readline = createInterface({input: process.stdin, output, terminal: true});
    try {
        return await new Promise<string>((resolve) => {
            readline.question(question, (answer) => resolve(answer));
            muted = true;
        });
    } finally {
        readline.close();
        process.stderr.write('\n');
    }
}

/** The keystore's password: from STRONGDOGE_WALLET_PASSWORD, else asked for when a person is at the terminal. */
export async function walletPassword(settings: {wallet?: string | undefined}) {
    if (settings.wallet === undefined || process.env.STRONGDOGE_WALLET_PASSWORD !== undefined)
        return process.env.STRONGDOGE_WALLET_PASSWORD;
    return promptSecret(`password of the wallet keystore ${settings.wallet}: `);
}
