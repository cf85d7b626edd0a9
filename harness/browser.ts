import {access} from 'node:fs/promises';
import {chromium, type Browser, type BrowserContext, type Page} from 'playwright-core';

/** Debian's chromium (`apt-get install chromium`; .ci/run installs it): playwright-core downloads no browser. */
export const CHROMIUM_PATH = process.env.STRONGDOGE_CHROMIUM ?? '/usr/bin/chromium';

export async function launchChromium(): Promise<Browser> {
    await access(CHROMIUM_PATH).catch(() => {
        throw new Error(`${CHROMIUM_PATH} is needed for the web page's tests (apt-get install chromium, or set STRONGDOGE_CHROMIUM)`);
    });
    return chromium.launch({executablePath: CHROMIUM_PATH, args: ['--disable-gpu', '--disable-dev-shm-usage']});
}

export interface WatchedPage {
    page: Page,
    context: BrowserContext,
    /** Console errors and warnings, uncaught exceptions, failed requests and dialogs (alert, confirm…), as they happened. */
    problems: string[],
    /** Every URL the page asked for. */
    requests: string[]
}

/** A fresh context (its own storage) and page, every complaint of the browser kept in `problems`. */
export async function watchedPage(browser: Browser, viewport = {width: 1280, height: 800}): Promise<WatchedPage> {
    const context = await browser.newContext({viewport});
    const page = await context.newPage();
    const problems: string[] = [];
    const requests: string[] = [];
    page.on('console', (message) => {
        if (message.type() === 'error' || message.type() === 'warning')
            problems.push(`console ${message.type()}: ${message.text()}`);
    });
    page.on('pageerror', (error) => problems.push(`uncaught: ${error.message}`));
    page.on('requestfailed', (request) => {
        // A fetch the page aborts itself (the stop button, a poll when the view closes) is not a problem.
        if (request.failure()?.errorText !== 'net::ERR_ABORTED')
            problems.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
    });
    page.on('request', (request) => requests.push(request.url()));
    page.on('dialog', (dialog) => {
        problems.push(`dialog ${dialog.type()}: ${dialog.message()}`);
        void dialog.dismiss();
    });
    return {page, context, problems, requests};
}
