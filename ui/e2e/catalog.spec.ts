// The catalog page: services and actions from the real demo backends (by reflection), the search,
// and an action's request/response messages with types, comments, enums and nested messages.
import { expect, expectAccessible, open, screenshot, test } from "./fixtures";
import { register, userDoc } from "./market-helpers";
import { unique } from "./fixtures";

const DEMO_SERVICES = [
  "demo.asset.v1.AssetService",
  "demo.broadcast.v1.BroadcastService",
  "demo.notification.v1.NotificationService",
  "demo.user.v1.UserService",
];

test("the catalog lists the four demo services with backend, endpoint and source, and the search narrows them", async ({ page }) => {
  await open(page, "#/catalog");
  await expect(page.getByRole("heading", { name: "Catalog", level: 1 })).toBeVisible();
  for (const s of DEMO_SERVICES) {
    const row = page.getByTestId(`service-row-${s}`);
    await expect(row).toContainText(s);
    await expect(row).toContainText("demo"); // backend name
    await expect(row).toContainText("reflection");
    await expect(row).toContainText(/http:\/\/127\.0\.0\.1:\d+/);
    await expect(page.getByTestId(`service-${s}`)).toBeVisible();
  }
  await expect(page.getByTestId("catalog-count")).toHaveText(/\d+ actions in 4 services/);
  await expectAccessible(page);

  const search = page.getByLabel("Search services, methods and fields");
  // By service.
  await search.fill("notification");
  await expect(page.getByTestId("service-demo.notification.v1.NotificationService")).toBeVisible();
  await expect(page.locator(".catalog-service")).toHaveCount(1);
  // By method.
  await search.fill("subscribe");
  await expect(page.locator(".catalog-service")).toHaveCount(1);
  const list = page.getByRole("complementary", { name: "Services and actions" });
  await expect(list.getByRole("link", { name: /Subscribe/ })).toBeVisible();
  await expect(page.getByText("server streaming").first()).toBeVisible();
  // By field name, nested ones included (User.display_name is in CreateUser's and GetUser's responses).
  await search.fill("display_name");
  await expect(page.locator(".catalog-service")).toHaveCount(1);
  const users = page.getByTestId("service-demo.user.v1.UserService");
  await expect(users.getByRole("link")).toHaveText(["CreateUser", "GetUser"]);
  await expect(page.locator(".catalog-services tbody tr")).toHaveCount(1);
  await expect(users.getByText("fields: display_name").first()).toBeVisible();
  await expect(page.getByTestId("catalog-count")).toHaveText(/^2 of \d+ actions match$/);
  // The search is in the address: a reload keeps it.
  await page.reload();
  await expect(page.getByLabel("Search services, methods and fields")).toHaveValue("display_name");
  await expect(page.locator(".catalog-service")).toHaveCount(1);
  // Nothing.
  await page.getByLabel("Search services, methods and fields").fill("no_such_thing_anywhere");
  await expect(page.getByText("Nothing matches")).toBeVisible();
  await page.getByRole("button", { name: "Clear the search" }).click();
  await expect(page.locator(".catalog-service")).toHaveCount(4);
});

test("an action shows its messages: fields, types, proto comments, repeated, nested (expandable) and enums", async ({ page }) => {
  await open(page, "#/catalog");
  await page.getByTestId("service-demo.user.v1.UserService").getByRole("link", { name: "CreateUser" }).click();
  await expect(page).toHaveURL(/#\/catalog\/demo\.user\.v1\.UserService%2FCreateUser/);
  await expect(page.getByRole("heading", { name: "UserService/CreateUser" })).toBeVisible();
  await expect(page.getByTestId("action-name")).toHaveText("demo.user.v1.UserService/CreateUser");
  await expect(page.getByText("unary")).toBeVisible();
  // The method's comment from user.proto.
  await expect(page.getByTestId("action-description")).toContainText("Creates a user");

  const request = page.getByTestId("message-request");
  await expect(request.getByRole("heading")).toContainText("demo.user.v1.CreateUserRequest");
  await expect(request).toContainText("What CreateUser needs"); // the message's comment
  const email = request.getByTestId("field-email");
  await expect(email).toContainText("string");
  await expect(email).toContainText("The new user's email address"); // the field's comment
  await expect(request.getByTestId("field-roles")).toContainText("repeated string");

  // The response's `user` is a nested message, collapsed until expanded.
  const response = page.getByTestId("message-response");
  await expect(response.getByTestId("field-user")).toContainText("demo.user.v1.User");
  await expect(response.getByTestId("field-user.display_name")).toHaveCount(0);
  const toggle = response.getByRole("button", { name: "Expand user" });
  await expect(toggle).toHaveAttribute("aria-expanded", "false");
  await toggle.click();
  await expect(response.getByRole("button", { name: "Collapse user" })).toHaveAttribute("aria-expanded", "true");
  await expect(response.getByTestId("field-user.display_name")).toContainText("string");
  await expect(response.getByTestId("field-user.sequence")).toContainText("int64");
  await expect(response.getByTestId("field-user.created_at")).toContainText("google.protobuf.Timestamp");
  await expect(response.getByTestId("field-user.roles")).toContainText("repeated string");
  await expect(response.getByTestId("field-user.id")).toContainText("Server-assigned id");
  // The example request is built from the schema.
  await request.getByText("Example JSON").click();
  await expect(request.locator("pre")).toContainText('"display_name": ""');

  // The links to the other pages.
  await expect(page.getByRole("link", { name: "Use in composer" })).toHaveAttribute(
    "href",
    "#/composer?add=demo.user.v1.UserService%2FCreateUser",
  );
  await expect(page.getByRole("link", { name: "Patterns using it" })).toHaveAttribute(
    "href",
    "#/marketplace?action=demo.user.v1.UserService%2FCreateUser",
  );
  await expect(page.getByRole("link", { name: "Impact" })).toHaveAttribute("href", "#/graph?impact=demo.user.v1.UserService%2FCreateUser");
  await expectAccessible(page);
  await screenshot(page, "catalog");

  // An enum: SendPush's priority lists its values (with their numbers) and its comment.
  await page.getByLabel("Search services, methods and fields").fill("priority");
  await expect(page.locator(".catalog-service")).toHaveCount(1);
  await page.getByRole("link", { name: "SendPush" }).click();
  const priority = page.getByTestId("message-request").getByTestId("field-priority");
  await expect(priority).toContainText("demo.notification.v1.Priority");
  await expect(priority).toContainText("enum");
  await expect(priority.getByRole("list", { name: "Values of priority" }).getByRole("listitem")).toContainText([
    "PRIORITY_UNSPECIFIED = 0",
    "PRIORITY_LOW = 1",
    "PRIORITY_NORMAL = 2",
    "PRIORITY_HIGH = 3",
  ]);
  await expect(priority).toContainText("How urgently devices should show it");
  await expectAccessible(page);
});

test("an action lists the patterns that call it, and 'Patterns using it' opens the marketplace filtered by it", async ({ page }) => {
  const name = unique("cat_uses");
  await register(userDoc(name));
  await open(page, "#/catalog/demo.notification.v1.NotificationService%2FSendPush");
  await expect(page.getByRole("heading", { name: "NotificationService/SendPush" })).toBeVisible();
  await expect(page.locator(".catalog-used-by")).toContainText("Called by");
  await page.getByRole("link", { name: "Patterns using it" }).click();
  await expect(page).toHaveURL(/#\/marketplace\?action=demo\.notification\.v1\.NotificationService%2FSendPush/);
  await expect(page.getByLabel("Calls action")).toHaveValue("demo.notification.v1.NotificationService/SendPush");
  // Sorted by name and paged: look for ours by narrowing with the text search too.
  await page.getByLabel("Search", { exact: true }).fill(name);
  await expect(page.getByTestId(`pattern-card-${name}`)).toBeVisible();
  await expect(page.getByTestId("pattern-card-user_creation")).toHaveCount(0);

  // An unknown action says so.
  await open(page, "#/catalog/demo.nope.v1.Nope%2FNothing");
  await expect(page.getByRole("alert")).toContainText("No action `demo.nope.v1.Nope/Nothing`");
});
