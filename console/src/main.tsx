// The console's shell: the header (who is signed in, language switch, sign-out) and the
// page of the current route. On load it asks the server who the cookie belongs to
// (WhoAmI, sent by ./boot.ts, its own small file, before this bundle runs); without a
// valid cookie it shows the sign-in page.
import "./styles.css";
import { render } from "preact";
import { useEffect } from "preact/hooks";
import { effect } from "@preact/signals";
import { auth, signOut as bridgeSignOut } from "./api";
import type {} from "./boot"; // window.kcnetBoot's type
import { lang, t } from "./i18n";
import { me, navigate, route, setLangParam } from "./state";
import { resetCaches, Queue } from "./pages/Queue";
import { RequestPage } from "./pages/RequestPage";
import { SignIn } from "./pages/SignIn";
import { reportKinds, Reports, type ReportKind } from "./pages/Reports";
import { PlanList, PlanPage } from "./pages/Plans";
import { resetReportCaches } from "./pages/reportKit";
import { rt } from "./pages/reportsText";
import { FacilityPage, Registry } from "./pages/Registry";
import { MapPage } from "./pages/MapPage";
import { Conflicts } from "./pages/Conflicts";
import { Admin } from "./pages/Admin";
import { startLive, stopLive } from "./live";
import { tr } from "./i18n-review";
import { Role } from "@gen/kcnet/v1/domain_pb";
import { WhoAmIResponseSchema } from "@gen/kcnet/v1/services_pb";
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";


// One live-change stream per tab while someone is signed in.
effect(() => (me.value ? startLive() : stopLive()));

effect(() => {
  document.documentElement.lang = lang.value;
  document.title = t().appTitle;
});

async function whoAmI() {
  try {
    // boot.ts's answer; asked here only if index.html did not load boot.ts.
    const json = window.kcnetBoot
      ? await window.kcnetBoot.whoAmI
      : toJson(WhoAmIResponseSchema, await auth.whoAmI({}));
    me.value = json ? (fromJson(WhoAmIResponseSchema, json as JsonValue, { ignoreUnknownFields: true }).user ?? null) : null;
  } catch {
    me.value = null;
  }
}

async function signOut() {
  try {
    await bridgeSignOut(); // the bridge calls Logout (the token is revoked) and clears the cookie
  } catch {
    // Signed out on the server already, or unreachable: the page forgets the user anyway.
  }
  resetCaches();
  resetReportCaches();
  me.value = null;
  navigate("#/queue");
}

function Header() {
  const user = me.value;
  return (
    <header class="top">
      <a class="skip" href="#main">
        {t().skipToMain}
      </a>
      <span class="brand">{t().appTitle}</span>
      <nav aria-label="kcnet">
        {user && <a href="#/queue">{t().queue}</a>}
        {user && <a href="#/registry">{rt().registry}</a>}
        {user && <a href="#/map">{rt().map}</a>}
        {user && <a href="#/reports/coverage">{rt().reports}</a>}
        {user && <a href="#/plans">{rt().plans}</a>}
        {(user?.role === Role.DISTRICT_COORDINATOR || user?.role === Role.PROVINCE_OFFICER) && (
          <a href="#/conflicts">{tr().conflicts}</a>
        )}
        {user?.role === Role.ADMINISTRATOR && <a href="#/admin">{tr().admin}</a>}
      </nav>
      <span class="spacer" />
      <button
        type="button"
        class="link"
        lang={lang.value === "en" ? "vi" : "en"}
        aria-label={t().switchLangLabel}
        onClick={() => {
          lang.value = lang.value === "en" ? "vi" : "en";
          setLangParam(lang.value);
        }}
      >
        {t().switchLang}
      </button>
      {user && (
        <>
          <span class="who">
            {t().signedInAs} <strong>{user.displayName || user.username}</strong>
          </span>
          <button type="button" class="secondary" onClick={signOut}>
            {t().signOut}
          </button>
        </>
      )}
    </header>
  );
}

function Page() {
  const r = route.value;
  // Move focus to the new page's heading, so keyboard and screen-reader users land on it.
  useEffect(() => {
    (document.querySelector("main h1") as HTMLElement | null)?.focus();
  }, [r, me.value?.id]);
  if (me.value === undefined) return <main id="main" aria-busy="true" />;
  if (me.value === null) return <SignIn />;
  const m = /^#\/request\/([\w-]+)/.exec(r);
  if (m) return <RequestPage id={m[1]} key={m[1]} />;
  const rep = /^#\/reports(?:\/(\w+))?/.exec(r);
  if (rep) {
    const kind = (reportKinds as readonly string[]).includes(rep[1] ?? "") ? (rep[1] as ReportKind) : "coverage";
    return <Reports kind={kind} key={kind} />;
  }
  const plan = /^#\/plans\/(\d+)\/(\d{4})/.exec(r);
  if (plan) return <PlanPage provinceId={BigInt(plan[1])} year={Number(plan[2])} key={r} />;
  if (r.startsWith("#/plans")) return <PlanList />;
  const fac = /^#\/facility\/([\w-]+)/.exec(r);
  if (fac) return <FacilityPage id={fac[1]} key={fac[1]} />;
  if (r.startsWith("#/registry")) return <Registry />;
  if (r.startsWith("#/map")) return <MapPage />;
  if (r.startsWith("#/conflicts")) return <Conflicts />;
  if (r.startsWith("#/admin")) return <Admin />;
  return <Queue />;
}

function App() {
  return (
    <>
      <Header />
      <Page />
    </>
  );
}

render(<App />, document.getElementById("app")!);
whoAmI();
