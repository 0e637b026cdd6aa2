// Drives the ironhub web console in a real browser (Debian's Chromium through playwright-core).
// conformance/tests/console.rs starts a hub, provisions a tenant and runs this script; the two
// talk over stdio: the script prints `DEVICE <pk> <dn> <secret>` once the console created a device
// (the test connects it over MQTT and makes it publish, some of it throttled) and `MORE` when it
// wants a second batch of messages; the test answers nothing, it acts. GATEWAY (`{pk}/{dn}`)
// is a gateway carrying SUB_DEVICE, logged in; OTA_BATCH an upgrade batch whose one job, for
// OTA_DEVICE, stays queued. The tenant also makes a device group with the console's device in
// it. Exit 0 means every check
// held; screenshots go to $ARTIFACTS whatever happens.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const url = env("CONSOLE_URL");
const adminToken = env("ADMIN_TOKEN");
const tenantKey = env("TENANT_KEY");
const tenant = env("TENANT");
const productKey = env("PRODUCT_KEY");
const artifacts = env("ARTIFACTS");
const WAIT = 20_000;
mkdirSync(artifacts, { recursive: true });

// Bounded: the whole run stops by itself.
const deadline = setTimeout(() => {
  console.error("console test: over 120 s, giving up");
  process.exit(2);
}, 120_000);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.setDefaultTimeout(WAIT);
const shot = (name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
const step = (what) => console.error(`console test: ${what}`);
const number = async (locator) => Number((await locator.innerText()).replace(/[^0-9]/g, ""));

/** Waits until `f()` (polled) returns true. */
async function until(what, f) {
  const end = Date.now() + WAIT;
  for (;;) {
    if (await f().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await page.waitForTimeout(250);
  }
}

async function signIn(token) {
  await page.goto(url);
  await page.fill("#token", token);
  await page.click("#login button[type=submit]");
  await page.waitForSelector("#nav:not([hidden])");
}

try {
  step("the admin signs in and sees the tenant");
  await signIn(adminToken);
  await page.click("a[href='#/tenants']");
  await page.waitForSelector(`tr[data-tenant='${tenant}']`);
  await shot("01-admin-tenants");

  step("a gateway's page lists its sub-device, online through it");
  await page.goto(`${url}#/devices/${env("GATEWAY")}`);
  const sub = `tr[data-sub-device='${env("SUB_DEVICE")}'] .badge`;
  await until("the sub-device online", async () => (await page.innerText(sub)) === "online");
  step("its page shows its latest temperature and charts it");
  await until("the latest temperature", async () =>
    (await page.innerText("tr[data-property='temperature'] td.value")) === "23");
  await until("the temperature chart", async () =>
    ((await page.getAttribute("#property-chart svg polyline", "points")) || "").split(" ").length === 48);
  await shot("01b-gateway-sub-devices");
  await page.click("a[href='#/tenants']");
  await page.click("#sign-out");

  step("a wrong token is refused with a message");
  await page.fill("#token", "not-a-token");
  await page.click("#login button[type=submit]");
  await until("the refusal", async () => (await page.innerText("#error")).includes("not accepted"));

  step("the tenant signs in with its API key and creates a device");
  await signIn(tenantKey);
  if ((await page.innerText("#who")) !== `tenant ${tenant}`) throw new Error("signed in as the wrong principal");
  if (await page.isVisible("a[href='#/tenants']")) throw new Error("a tenant key sees the tenants page");
  await page.click("a[href='#/products']");
  await page.click(`tr[data-product='${productKey}'] a`);
  await page.fill("#device-name", "console-dev");
  await page.click("#create-device button[type=submit]");
  const secret = await page.innerText("#secret code[data-field=DeviceSecret]");
  if (!/^[0-9a-f]{32}$/i.test(secret)) throw new Error(`no DeviceSecret shown: ${secret}`);
  await page.waitForSelector("tr[data-device='console-dev'] .badge");
  await shot("02-device-created");
  if ((await page.innerText("tr[data-device='console-dev'] .badge")) !== "inactive") {
    throw new Error("a new device should be inactive");
  }
  console.log(`DEVICE ${productKey} console-dev ${secret}`);

  step("the device comes online");
  await until("the device online", async () =>
    (await page.innerText("tr[data-device='console-dev'] .badge")) === "online");
  await shot("03-device-online");

  step("the device page shows its messages and the throttled ones per hour");
  await page.click("tr[data-device='console-dev'] a");
  await until("the online badge", async () => (await page.innerText("#device-state")) === "online");
  await until("discarded messages in the hourly status", async () =>
    (await number(page.locator("#hours tr").first().locator("td.discarded"))) > 0);
  await until("the last messages", async () => (await page.locator("#messages tr code").count()) > 0);
  const discarded = await number(page.locator("#hours tr").first().locator("td.discarded"));
  const sent = await number(page.locator("#hours tr").first().locator("td").nth(1));
  step(`hour row: ${sent} messages, ${discarded} discarded`);
  if (!(discarded > 0 && discarded < sent)) throw new Error(`unexpected hour row: ${sent} sent, ${discarded} discarded`);
  await shot("04-device-page");

  step("the tenant creates a device group, puts console-dev in it and the device page names it");
  await page.click("a[href='#/groups']");
  await page.fill("#group-name", "console-group");
  await page.click("#create-group button[type=submit]");
  await page.click("tr[data-group='console-group'] a");
  await page.fill("#member-product", productKey);
  await page.fill("#member-device", "console-dev");
  await page.click("#add-device button[type=submit]");
  await page.waitForSelector("tr[data-member='console-dev']");
  await until("the group's count", async () => (await page.innerText("#group-count")) === "1 device");
  await shot("04b-group");
  await page.click("tr[data-member='console-dev'] a");
  await until("the device's groups", async () => (await page.innerText("#device-groups")).includes("console-group"));

  step("the device page sets a desired value and a property (console-dev does not answer)");
  await page.fill("#set-desired-property", "target");
  await page.fill("#set-desired-value", "22");
  await page.click("#set-desired button[type=submit]");
  await until("the desired value listed", async () =>
    (await page.innerText("tr[data-desired='target']")).includes("22"));
  await page.fill("#set-property-property", "target");
  await page.fill("#set-property-value", "21");
  await page.click("#set-property button[type=submit]");
  await until("the set's outcome", async () => (await page.innerText("#thing-result")).includes("\"timeout\""));
  await shot("04c-thing-model");

  step("the usage page counts messages against the monthly limit");
  await page.click("a[href='#/usage']");
  const used = page.locator("tr[data-component=transport_messages] td.used");
  await until("monthly usage", async () => (await number(used)) > 0);
  const before = await number(used);
  if (await page.locator("tr[data-component=transport_messages].warning").count()) {
    throw new Error(`warning shown already at ${before}`);
  }
  await shot("05-usage-before");
  console.log("MORE");
  await until("the usage numbers to change", async () => (await number(used)) > before);
  await until("the 80 % warning", async () =>
    (await page.locator("tr[data-component=transport_messages].warning").count()) === 1);
  step(`monthly transport messages: ${before} -> ${await number(used)}`);
  await shot("06-usage-warning");

  step("search and disable on the product page");
  await page.click("a[href='#/products']");
  await page.click(`tr[data-product='${productKey}'] a`);
  await page.waitForSelector("tr[data-device='console-dev']");
  const rows = () => page.locator("#devices tr").count();
  if ((await rows()) !== 2) throw new Error(`expected the provisioned device and console-dev, got ${await rows()}`);
  await page.fill("#device-search", "console");
  await until("the search to keep one device", async () => (await rows()) === 1);
  await page.fill("#device-search", "no-such-device");
  await until("the search to keep none", async () => (await rows()) === 0);
  await page.fill("#device-search", "");
  await page.click("tr[data-device='console-dev'] button");
  await until("the device disabled", async () =>
    (await page.innerText("tr[data-device='console-dev'] .badge")) === "disabled");
  await shot("07-device-disabled");

  step("the overview charts live rates");
  await page.click("a[href='#/']");
  await until("two rate samples", async () =>
    ((await page.getAttribute("#rate-chart svg polyline", "points")) || "").split(" ").length >= 2);
  await shot("08-overview");

  step("the firmware page shows the batch and its queued job; the console cancels it");
  const batch = env("OTA_BATCH");
  await page.click("a[href='#/ota']");
  await until("the batch's queued job", async () =>
    (await page.innerText(`tr[data-batch='${batch}'] td.queued`)) === "1");
  await page.click(`tr[data-batch='${batch}'] a`);
  const job = `tr[data-job='${env("OTA_DEVICE")}'] .badge`;
  await until("the job queued", async () => (await page.innerText(job)) === "queued");
  await page.click("#batch-cancel");
  await until("the job canceled", async () => (await page.innerText(job)) === "canceled");
  await shot("09-ota-batch");
  step("all checks held");
  await browser.close();
  clearTimeout(deadline);
} catch (e) {
  console.error(`console test failed: ${e.message}`);
  await shot("failure").catch(() => {});
  await browser.close();
  process.exit(1);
}
