// Administration (#/admin), for administrators (accounts, org units, assignments:
// DOMAIN.md): the users of the caller's scope (UserService.ListUsers), each with its org
// units or review area of communes (UpdateUser org_unit_ids), a password reset
// (ResetPassword: the user's tokens and device credentials are revoked) and deactivation
// (UpdateUser active); a form to create a user; and the devices of the scope's
// collaborators with their last sync and pending writes (ReportService.GetActivity), which
// an administrator revokes (AuthService.RevokeDeviceCredentials, then SyncService
// .ReleaseDevice); and the import of the official org-unit code list, dry run first
// (OrgUnitService.ImportOrgUnits). Every rule is the server's: a refusal shows the server's message, which
// names the field.
import { useEffect, useState } from "preact/hooks";
import { OrgUnitLevel, Role, type OrgUnit, type User } from "@gen/kcnet/v1/domain_pb";
import type { CollaboratorActivity } from "@gen/kcnet/v1/reports_pb";
import { all, auth, errorText, orgUnits, reports, syncService, users } from "../api";
import { formatTime, t } from "../i18n";
import { tr } from "../i18n-review";
import { me } from "../state";

// Every org unit of the caller's scope, parents before children (depth-first).
async function loadUnits(): Promise<{ unit: OrgUnit; depth: number }[]> {
  const out: { unit: OrgUnit; depth: number }[] = [];
  const walk = async (parent: bigint, depth: number) => {
    const list = await all(async (pageToken) => {
      const r = await orgUnits.listOrgUnits({ parentId: parent, pageSize: 500, pageToken });
      return { items: r.orgUnits, next: r.nextPageToken };
    });
    for (const u of list) {
      out.push({ unit: u, depth });
      if (u.level !== OrgUnitLevel.COMMUNE && depth < 4) await walk(u.id, depth + 1);
    }
  };
  await walk(0n, 0);
  return out;
}

const roles = [Role.COMMUNE_COLLABORATOR, Role.DISTRICT_COORDINATOR, Role.PROVINCE_OFFICER, Role.ADMINISTRATOR];
const selectedIds = (el: HTMLSelectElement) => [...el.selectedOptions].map((o) => BigInt(o.value));

function UnitPicker(props: {
  id: string;
  units: { unit: OrgUnit; depth: number }[];
  value: bigint[];
  onChange: (ids: bigint[]) => void;
}) {
  return (
    <div class="field">
      <label for={props.id}>{tr().orgUnits}</label>
      <select
        id={props.id}
        multiple
        size={Math.min(8, Math.max(3, props.units.length))}
        aria-describedby={`${props.id}-help`}
        onChange={(e) => props.onChange(selectedIds(e.target as HTMLSelectElement))}
      >
        {props.units.map(({ unit, depth }) => (
          <option value={String(unit.id)} key={String(unit.id)} selected={props.value.includes(unit.id)}>
            {`${"— ".repeat(depth)}${unit.name} (${unit.code})`}
          </option>
        ))}
      </select>
      <small id={`${props.id}-help`}>{tr().orgUnitsHelp}</small>
    </div>
  );
}

function EditUser(props: { user: User; units: { unit: OrgUnit; depth: number }[]; onSaved: () => void }) {
  const u = props.user;
  const [unitIds, setUnitIds] = useState<bigint[]>(u.orgUnitIds);
  const [password, setPassword] = useState("");
  const [message, setMessage] = useState("");
  const [error, setError] = useState("");
  const act = async (what: () => Promise<unknown>) => {
    setMessage("");
    setError("");
    try {
      await what();
      setMessage(tr().saved);
      props.onSaved();
    } catch (e) {
      setError(errorText(e));
    }
  };
  return (
    <section aria-labelledby="edit-user" id="edit-user-section">
      <h3 id="edit-user">{tr().editUser(u.displayName || u.username)}</h3>
      <UnitPicker id="edit-units" units={props.units} value={unitIds} onChange={setUnitIds} />
      <button
        type="button"
        onClick={() =>
          act(() =>
            users.updateUser({
              user: { id: u.id, orgUnitIds: unitIds },
              updateMask: { paths: ["org_unit_ids"] },
            }),
          )
        }
      >
        {tr().saveUnits}
      </button>
      <div class="filters">
        <div class="field">
          <label for="new-password">{tr().newPassword}</label>
          <input
            id="new-password"
            type="password"
            autocomplete="new-password"
            value={password}
            onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
          />
        </div>
        <button
          type="button"
          class="secondary"
          onClick={() => act(() => users.resetPassword({ userId: u.id, newPassword: password }).then(() => setPassword("")))}
        >
          {tr().resetPassword}
        </button>
        <button
          type="button"
          class="secondary"
          onClick={() =>
            act(() =>
              users.updateUser({ user: { id: u.id, active: !u.active }, updateMask: { paths: ["active"] } }),
            )
          }
        >
          {u.active ? tr().deactivate : tr().activate}
        </button>
      </div>
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      <p aria-live="polite">{message}</p>
    </section>
  );
}

function CreateUser(props: { units: { unit: OrgUnit; depth: number }[]; onCreated: () => void }) {
  const [username, setUsername] = useState("");
  const [displayName, setDisplayName] = useState("");
  const [role, setRole] = useState<Role>(Role.COMMUNE_COLLABORATOR);
  const [unitIds, setUnitIds] = useState<bigint[]>([]);
  const [password, setPassword] = useState("");
  const [message, setMessage] = useState("");
  const [error, setError] = useState("");
  const submit = async (e: Event) => {
    e.preventDefault();
    setMessage("");
    setError("");
    try {
      await users.createUser({ user: { username, displayName, role, orgUnitIds: unitIds }, password });
      setMessage(tr().created(username));
      setUsername("");
      setDisplayName("");
      setPassword("");
      props.onCreated();
    } catch (err) {
      setError(errorText(err));
    }
  };
  const text = (id: string, label: string, value: string, set: (v: string) => void, type = "text") => (
    <div class="field">
      <label for={id}>{label}</label>
      <input
        id={id}
        type={type}
        autocomplete={type === "password" ? "new-password" : "off"}
        value={value}
        onInput={(e) => set((e.target as HTMLInputElement).value)}
      />
    </div>
  );
  return (
    <section aria-labelledby="create-user">
      <h2 id="create-user">{tr().createUser}</h2>
      <form onSubmit={submit}>
        <div class="filters">
          {text("new-username", tr().username, username, setUsername)}
          {text("new-display-name", tr().displayName, displayName, setDisplayName)}
          <div class="field">
            <label for="new-role">{tr().role}</label>
            <select id="new-role" value={String(role)} onChange={(e) => setRole(Number((e.target as HTMLSelectElement).value) as Role)}>
              {roles.map((r) => (
                <option value={String(r)} key={r}>
                  {tr().roleNames[r]}
                </option>
              ))}
            </select>
          </div>
          {text("new-user-password", tr().password, password, setPassword, "password")}
        </div>
        <UnitPicker id="new-units" units={props.units} value={unitIds} onChange={setUnitIds} />
        <button type="submit">{tr().create}</button>
      </form>
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      <p aria-live="polite">{message}</p>
    </section>
  );
}

function Devices() {
  const [list, setList] = useState<CollaboratorActivity[] | null>(null);
  const [message, setMessage] = useState("");
  const [error, setError] = useState("");
  const [reloads, setReloads] = useState(0);
  useEffect(() => {
    reports
      .getActivity({ filter: {} })
      .then((r) => setList(r.collaborators))
      .catch((e) => setError(errorText(e)));
  }, [reloads]);
  const revoke = async (deviceId: string) => {
    setMessage("");
    setError("");
    try {
      const r = await auth.revokeDeviceCredentials({ deviceId });
      await syncService.releaseDevice({ deviceId });
      setMessage(tr().revoked(deviceId, r.revoked));
      setReloads((n) => n + 1);
    } catch (e) {
      setError(errorText(e));
    }
  };
  const rows = (list ?? []).flatMap((c) => c.devices.map((d) => ({ c, d })));
  return (
    <section aria-labelledby="devices">
      <h2 id="devices">{tr().devices}</h2>
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      <p aria-live="polite">{message}</p>
      {list !== null && rows.length === 0 && <p>{tr().noDevices}</p>}
      {rows.length > 0 && (
        <table class="queue" id="device-table">
          <caption class="visually-hidden">{tr().devices}</caption>
          <thead>
            <tr>
              <th scope="col">{tr().device}</th>
              <th scope="col">{tr().displayName}</th>
              <th scope="col">{tr().lastSync}</th>
              <th scope="col" class="num">
                {tr().pending}
              </th>
              <th scope="col">{t().action}</th>
            </tr>
          </thead>
          <tbody>
            {rows.map(({ c, d }) => (
              <tr key={`${c.userId}/${d.deviceId}`} data-device-id={d.deviceId}>
                <td>{d.deviceId}</td>
                <td>{c.displayName}</td>
                <td>{d.lastSyncMs > 0n ? formatTime(d.lastSyncMs) : "—"}</td>
                <td class="num">{d.pendingWrites}</td>
                <td>
                  <button type="button" class="secondary" aria-label={tr().revokeDevice(d.deviceId)} onClick={() => revoke(d.deviceId)}>
                    {tr().revoke}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function ImportUnits(props: { onImported: () => void }) {
  const [csv, setCsv] = useState("");
  const [checked, setChecked] = useState<string | null>(null); // the text of the last good dry run
  const [message, setMessage] = useState("");
  const [codes, setCodes] = useState<string[]>([]);
  const [error, setError] = useState("");
  const run = async (dryRun: boolean) => {
    setMessage("");
    setError("");
    setCodes([]);
    if (!dryRun && checked !== csv) return setError(tr().importNeedsDryRun);
    try {
      const r = await orgUnits.importOrgUnits({ csv, dryRun });
      setCodes(r.added);
      if (dryRun) {
        setChecked(csv);
        setMessage(tr().dryRunResult(r.added.length, r.unchanged.length));
      } else {
        setChecked(null);
        setMessage(tr().importResult(r.added.length));
        props.onImported();
      }
    } catch (e) {
      setChecked(null);
      setError(errorText(e));
    }
  };
  return (
    <section aria-labelledby="import-units">
      <h2 id="import-units">{tr().importUnits}</h2>
      <p class="help">{tr().importHelp}</p>
      <div class="field">
        <label for="csv-file">{tr().csvFile}</label>
        <input
          id="csv-file"
          type="file"
          accept=".csv,text/csv"
          onChange={async (e) => {
            const file = (e.target as HTMLInputElement).files?.[0];
            if (file) setCsv(await file.text());
          }}
        />
      </div>
      <div class="field">
        <label for="csv-text">{tr().csvText}</label>
        <textarea id="csv-text" rows={6} value={csv} onInput={(e) => setCsv((e.target as HTMLTextAreaElement).value)} />
      </div>
      <button type="button" class="secondary" onClick={() => run(true)}>
        {tr().dryRun}
      </button>{" "}
      <button type="button" onClick={() => run(false)}>
        {tr().importApply}
      </button>
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      <p aria-live="polite" id="import-result">
        {message}
        {codes.length > 0 && ` (${codes.slice(0, 20).join(", ")}${codes.length > 20 ? ", …" : ""})`}
      </p>
    </section>
  );
}

export function Admin() {
  const [units, setUnits] = useState<{ unit: OrgUnit; depth: number }[]>([]);
  const [list, setList] = useState<User[] | null>(null);
  const [error, setError] = useState("");
  const [editing, setEditing] = useState<bigint | null>(null);
  const [reloads, setReloads] = useState(0);
  const isAdmin = me.value?.role === Role.ADMINISTRATOR;
  useEffect(() => {
    loadUnits().then(setUnits).catch((e) => setError(errorText(e)));
  }, []);
  useEffect(() => {
    all(async (pageToken) => {
      const r = await users.listUsers({ pageSize: 500, pageToken });
      return { items: r.users, next: r.nextPageToken };
    })
      .then(setList)
      .catch((e) => setError(errorText(e)));
  }, [reloads]);
  const unitName = (id: bigint) => units.find((u) => u.unit.id === id)?.unit.name ?? String(id);
  const editingUser = list?.find((u) => u.id === editing);
  return (
    <main id="main" class="admin">
      <h1 tabIndex={-1}>{tr().admin}</h1>
      {!isAdmin && <p class="help">{tr().adminOnly}</p>}
      {error && (
        <p class="error" role="alert">
          {t().error}: {error}
        </p>
      )}
      <section aria-labelledby="users">
        <h2 id="users">{tr().users}</h2>
        {list === null ? (
          <p aria-live="polite">{t().loading}</p>
        ) : (
          <table class="queue" id="user-table">
            <caption class="visually-hidden">{tr().users}</caption>
            <thead>
              <tr>
                <th scope="col">{tr().username}</th>
                <th scope="col">{tr().displayName}</th>
                <th scope="col">{tr().role}</th>
                <th scope="col">{tr().orgUnits}</th>
                <th scope="col">{tr().active}</th>
                <th scope="col">{t().action}</th>
              </tr>
            </thead>
            <tbody>
              {list.map((u) => (
                <tr key={String(u.id)} data-username={u.username}>
                  <td>{u.username}</td>
                  <td>{u.displayName}</td>
                  <td>{tr().roleNames[u.role] ?? u.role}</td>
                  <td>{u.orgUnitIds.map(unitName).join(", ")}</td>
                  <td>{u.active ? tr().yes : tr().no}</td>
                  <td>
                    {isAdmin && (
                      <button
                        type="button"
                        class="secondary"
                        aria-label={tr().editUser(u.username)}
                        onClick={() => setEditing(u.id)}
                      >
                        {tr().edit}
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        {isAdmin && editingUser && (
          <EditUser
            user={editingUser}
            units={units}
            key={String(editingUser.id)}
            onSaved={() => setReloads((n) => n + 1)}
          />
        )}
      </section>
      {isAdmin && <CreateUser units={units} onCreated={() => setReloads((n) => n + 1)} />}
      {isAdmin && <Devices />}
      {isAdmin && (
        <ImportUnits
          onImported={() => {
            loadUnits().then(setUnits).catch((e) => setError(errorText(e)));
          }}
        />
      )}
    </main>
  );
}
