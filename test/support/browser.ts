import fs from 'node:fs';
import path from 'node:path';
import { type Browser, type BrowserContext, type BrowserContextOptions, chromium, type Page, type Request, type Response } from 'playwright-core';

/**
 * Debian's chromium driven by playwright-core, for the console's browser tests. Never
 * `npx playwright install`: the browser is the distribution's (`.ci/run` installs it).
 */
const CHROMIUM_PATH = '/usr/bin/chromium';
const ARTIFACTS_DIR = path.resolve(import.meta.dirname, '../../test-artifacts/console');

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

export function chromiumInstalled(): boolean {
  return fs.existsSync(CHROMIUM_PATH);
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    timeout: 60_000,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-gpu', '--no-first-run'],
  });
}

export interface SeenRequest {
  url: string;
  method: string;
  resourceType: string;
}

export interface SeenResponse {
  url: string;
  status: number;
  requestHeaders: Record<string, string>;
}

/**
 * What every page of every context did: requests, responses, CSP violations and uncaught
 * errors. One recorder can watch several contexts (the whole run is checked at the end).
 */
export class Recorder {
  readonly requests: SeenRequest[] = [];
  readonly responses: SeenResponse[] = [];
  readonly cspViolations: string[] = [];
  readonly pageErrors: string[] = [];

  watch(context: BrowserContext): void {
    context.on('request', (request: Request) => {
      this.requests.push({ url: request.url(), method: request.method(), resourceType: request.resourceType() });
    });
    context.on('response', (response: Response) => {
      this.responses.push({ url: response.url(), status: response.status(), requestHeaders: response.request().headers() });
    });
    const watchPage = (page: Page) => {
      page.on('console', (message) => {
        if (message.type() === 'error' && /Content[- ]Security[- ]Policy/i.test(message.text())) this.cspViolations.push(`${page.url()}: ${message.text()}`);
      });
      page.on('pageerror', (error) => this.pageErrors.push(`${page.url()}: ${error.message}`));
    };
    for (const page of context.pages()) watchPage(page);
    context.on('page', watchPage);
  }

  /** Requests whose host is not loopback (data:, blob: and about: never leave the machine). */
  offLoopback(): string[] {
    return this.requests
      .filter((r) => {
        let url: URL;
        try {
          url = new URL(r.url);
        } catch {
          return true;
        }
        if (url.protocol === 'data:' || url.protocol === 'blob:' || url.protocol === 'about:') return false;
        return !LOOPBACK_HOSTS.has(url.hostname);
      })
      .map((r) => `${r.method} ${r.url}`);
  }

  /** Throws if any request left loopback, the CSP refused anything or a page threw. */
  assertClean(): void {
    const problems = [
      ...this.offLoopback().map((r) => `request off loopback: ${r}`),
      ...this.cspViolations.map((v) => `CSP violation: ${v}`),
      ...this.pageErrors.map((e) => `page error: ${e}`),
    ];
    if (problems.length > 0) throw new Error(problems.join('\n'));
  }
}

/** A fresh context (zh-CN unless told otherwise), watched by `recorder`, with generous timeouts. */
export async function newContext(browser: Browser, recorder: Recorder, options: BrowserContextOptions = {}): Promise<BrowserContext> {
  const context = await browser.newContext({ locale: 'zh-CN', viewport: { width: 1280, height: 900 }, ...options });
  context.setDefaultTimeout(20_000);
  context.setDefaultNavigationTimeout(30_000);
  recorder.watch(context);
  return context;
}

/** Saves a full-page screenshot as `test-artifacts/console/<name>.png` (not committed). */
export async function screenshot(page: Page, name: string): Promise<string> {
  fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const file = path.join(ARTIFACTS_DIR, `${name.replace(/[^a-zA-Z0-9._-]+/g, '_')}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
