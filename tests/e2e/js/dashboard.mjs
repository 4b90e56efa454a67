// Drives Ferry's dashboard in Debian's headless Chromium through playwright-core, as an
// operator would: sees the registered services, opens one, moves it to the mesh through the
// confirmation dialog, waits for the traffic figures and charts, rolls it back, then on a
// ferry with --admin-token is refused without the token and accepted with it.
// Run by tests/e2e/test_dashboard.py: `node dashboard.mjs '<json settings>'`; prints one
// JSON report on stdout. Any step that does not happen in time throws (exit code 1).
import { chromium } from 'playwright-core';

const settings = JSON.parse(process.argv[2]);
const { url, tokenUrl, token, service, consulService, tokenService, out, expectEvents } = settings;
const report = { steps: [], console: [], pageErrors: [] };

const step = (name, detail = {}) => report.steps.push({ name, ...detail });

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  // Chromium's sandbox cannot start as root (CI and this machine run as root).
  args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
});
try {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') {
      report.console.push({ type: message.type(), text: message.text(), url: message.location().url });
    }
  });
  page.on('pageerror', (error) => report.pageErrors.push(String(error && error.stack || error)));

  const row = (name) => page.locator(`#services tr[data-service="${name}"]`);
  const modeOnPage = () => page.locator('h1 [data-mode]').getAttribute('data-mode');

  // The overview: the services registered through the real clients appear, with their
  // instances per status and per source.
  await page.goto(`${url}/`);
  await row(service).waitFor({ timeout: 15000 });
  await row(consulService).waitFor({ timeout: 15000 });
  await page.waitForFunction(
    ([name]) => {
      const text = document.querySelector(`#services tr[data-service="${name}"]`)?.textContent || '';
      return text.includes('2 UP') && text.includes('Eureka 2');
    }, [service], { timeout: 15000 });
  step('overview', {
    serviceRow: await row(service).innerText(),
    consulRow: await row(consulService).innerText(),
    catalogRow: await row('CATALOG').innerText(),
    config: await page.locator('#config').innerText(),
  });
  if (expectEvents) {
    await page.locator(`#events tr[data-kind="registered"]`).first().waitFor({ timeout: 15000 });
    step('events', { text: await page.locator('#events').innerText() });
  }
  // The KV browser descends into a folder without leaving the page.
  await page.locator('#kv a', { hasText: `${service.toLowerCase()}/` }).click();
  await page.locator('#kv td', { hasText: 'greeting' }).waitFor({ timeout: 10000 });
  step('kv', { text: await page.locator('#kv').innerText() });

  // One service's page, and the move to the mesh through the dialog.
  await row(service).locator('a').click();
  await page.locator('#service-name', { hasText: service }).waitFor({ timeout: 10000 });
  await page.locator('#instances tbody tr').nth(1).waitFor({ timeout: 10000 });
  step('service page', { mode: await modeOnPage(), instances: await page.locator('#instances').innerText() });
  await page.locator('#cutover', { hasText: 'Move to mesh' }).click();
  const dialog = page.locator('#confirm');
  await dialog.waitFor({ state: 'visible', timeout: 5000 });
  step('move dialog', { text: await dialog.innerText() });
  await page.locator('#confirm-ok').click();
  await dialog.waitFor({ state: 'hidden', timeout: 10000 });
  await page.locator('h1 [data-mode="mesh"]').waitFor({ timeout: 10000 });
  step('moved', { mode: await modeOnPage(), toast: await page.locator('#toast').innerText() });
  if (expectEvents) {
    // The service's own log shows the cutover without a reload.
    await page.locator('#events tr[data-kind="cutover"]').waitFor({ timeout: 10000 });
    step('cutover event', { text: await page.locator('#events tr[data-kind="cutover"]').innerText() });
  }

  // The caller loop runs now (the test starts it once the admin API shows the mode): the
  // figures and the charts follow the 10 s samples.
  await page.waitForFunction(() => {
    const figure = document.querySelector('[data-figure="rate"]');
    return figure && parseFloat(figure.textContent) > 0;
  }, null, { timeout: 45000, polling: 500 });
  await page.waitForFunction(() => {
    const chart = document.querySelector('#charts svg');
    return chart && Number(chart.getAttribute('data-points')) >= 2;
  }, null, { timeout: 45000, polling: 500 });
  const figures = {};
  for (const key of ['rate', 'success', 'p50', 'p99']) {
    figures[key] = await page.locator(`[data-figure="${key}"]`).innerText();
  }
  const chart = page.locator('#charts svg').first();
  step('traffic', {
    figures,
    points: Number(await chart.getAttribute('data-points')),
    path: await chart.locator('path.line').first().getAttribute('d'),
    endpoints: await page.locator('#instances').innerText(),
  });
  await page.screenshot({ path: `${out}/service.png`, fullPage: true });
  await chart.screenshot({ path: `${out}/chart.png` });

  // The overview again, with the service's figures and sparkline: the README's screenshot.
  await page.locator('.crumbs a', { hasText: 'All services' }).click();
  await row(service).locator('svg.spark').waitFor({ timeout: 10000 });
  step('overview in mesh', { serviceRow: await row(service).innerText() });
  await page.screenshot({ path: `${out}/overview.png` });

  // Roll back the same way.
  await row(service).locator('a').click();
  await page.locator('#cutover', { hasText: 'Roll back' }).click();
  await dialog.waitFor({ state: 'visible', timeout: 5000 });
  step('rollback dialog', { text: await dialog.innerText() });
  await page.locator('#confirm-ok').click();
  await page.locator('h1 [data-mode="legacy"]').waitFor({ timeout: 10000 });
  step('rolled back', { mode: await modeOnPage() });
  if (expectEvents) {
    await page.locator('#events tr[data-kind="rollback"]').waitFor({ timeout: 10000 });
    step('rollback event', { text: await page.locator('#events tr[data-kind="rollback"]').innerText() });
  }

  // A ferry with --admin-token: the control is refused without the token, nothing changes,
  // and the same dialog takes the token.
  await page.goto(`${tokenUrl}/#/services/${tokenService}`);
  await page.locator('#service-name', { hasText: tokenService }).waitFor({ timeout: 10000 });
  await page.locator('#cutover', { hasText: 'Move to mesh' }).click();
  await dialog.waitFor({ state: 'visible', timeout: 5000 });
  await page.locator('#confirm-ok').click();
  await page.locator('#confirm-error').waitFor({ state: 'visible', timeout: 10000 });
  await page.locator('#token-row').waitFor({ state: 'visible', timeout: 5000 });
  const unchanged = await (await fetch(`${tokenUrl}/api/services/${tokenService}`)).json();
  step('refused', {
    refusal: await page.locator('#confirm-error').innerText(),
    apiMode: unchanged.mode,
    pageMode: await modeOnPage(),
  });
  await page.locator('#token').fill('not-the-token');
  await page.locator('#confirm-ok').click();
  await page.locator('#confirm-error', { hasText: '403' }).waitFor({ timeout: 10000 });
  step('wrong token', { refusal: await page.locator('#confirm-error').innerText() });
  await page.locator('#token').fill(token);
  await page.locator('#confirm-ok').click();
  await dialog.waitFor({ state: 'hidden', timeout: 10000 });
  await page.locator('h1 [data-mode="mesh"]').waitFor({ timeout: 10000 });
  const moved = await (await fetch(`${tokenUrl}/api/services/${tokenService}`)).json();
  step('accepted with token', { apiMode: moved.mode, pageMode: await modeOnPage() });
} catch (error) {
  // Where it stopped, for the test's failure message: the error, the steps so far, the page.
  report.error = String(error && error.stack || error);
  for (const context of browser.contexts()) {
    for (const page of context.pages()) {
      report.pageText = await page.locator('body').innerText().catch(() => null);
      await page.screenshot({ path: `${out}/failure.png`, fullPage: true }).catch(() => {});
    }
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + '\n');
