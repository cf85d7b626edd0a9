/** A configuration problem the user must fix: reported as one line, exit code 2, nothing changed. */
export class ConfigError extends Error {
    readonly exitCode = 2;

    constructor(message: string) {
        super(message);
        this.name = 'ConfigError';
    }
}
