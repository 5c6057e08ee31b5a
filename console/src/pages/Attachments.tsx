// The photos and documents of a request, a facility and its visits, where decisions are
// made (the request page, the facility page). The list comes from
// AttachmentService.ListAttachments per owner, the bytes from AttachmentService.Download (a
// server stream through the Connect bridge), both scoped by the server like every call: an
// owner outside the user's area answers NOT_FOUND and shows nothing. The bytes are checked
// against the record's SHA-256 and shown from a Blob URL (the CSP allows `img-src blob:`);
// URLs are revoked when the page goes. Photos are fetched one at a time (the bridge caps the
// streams a user may hold open); a PDF is fetched when its link is clicked.
import { useEffect, useRef, useState } from "preact/hooks";
import { attachments as attachmentApi, Code, ConnectError, errorText } from "../api";
import { AttachmentOwnerType, type Attachment } from "@gen/kcnet/v1/domain_pb";
import { formatTime, lang, t } from "../i18n";

const vi = {
  heading: "Ảnh và tài liệu",
  none: "Chưa có ảnh hay tài liệu nào.",
  loading: "Đang tải ảnh…",
  author: "Người chụp",
  takenAt: "Thời điểm chụp",
  gps: "Vị trí",
  open: (c: string) => `Xem cỡ đầy đủ: ${c}`,
  close: "Đóng",
  pdf: (c: string) => `Tài liệu PDF: ${c}`,
  noCaption: "(không có chú thích)",
  badHash: "Ảnh bị hỏng: mã SHA-256 không khớp.",
  owner: { 1: "Lần thăm", 2: "Đề nghị", 3: "Cơ sở" } as Record<number, string>,
};
const en: typeof vi = {
  heading: "Photos and documents",
  none: "No photos or documents yet.",
  loading: "Loading photos…",
  author: "Taken by",
  takenAt: "Taken at",
  gps: "Location",
  open: (c: string) => `Full size: ${c}`,
  close: "Close",
  pdf: (c: string) => `PDF document: ${c}`,
  noCaption: "(no caption)",
  badHash: "Damaged photo: its SHA-256 does not match.",
  owner: { 1: "Visit", 2: "Request", 3: "Facility" },
};
const at = () => (lang.value === "en" ? en : vi);

/** One owner whose attachments are shown. */
export interface AttachmentOwner {
  type: AttachmentOwnerType;
  id: string;
  label?: string; // e.g. the visit's date
}

function hexToBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function bytesToHex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The bytes of `a` as a Blob URL and their SHA-256 (hex), checked against the record's
 * (when the browser can hash: a secure context; "" otherwise).
 */
async function fetchBlob(a: Attachment): Promise<{ url: string; sha256: string }> {
  const parts: Uint8Array[] = [];
  let next = 0n;
  for await (const chunk of attachmentApi.download({ sha256: hexToBytes(a.sha256), offset: 0n, length: 0n })) {
    if (chunk.offset !== next) throw new Error(`offset ${chunk.offset} != ${next}`);
    parts.push(chunk.data);
    next += BigInt(chunk.data.length);
  }
  const blob = new Blob(parts as BlobPart[], { type: a.mediaType });
  let sha256 = "";
  if (globalThis.crypto?.subtle) {
    sha256 = bytesToHex(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()));
    if (sha256 !== a.sha256) throw new Error(at().badHash);
  }
  return { url: URL.createObjectURL(blob), sha256 };
}

interface Item {
  owner: AttachmentOwner;
  a: Attachment;
}

/**
 * The attachments of `owners`, newest owner group first as given; `who` names an author.
 * Renders nothing until the list is known, and a line when there is none.
 */
export function AttachmentGallery({
  owners,
  who,
}: {
  owners: AttachmentOwner[];
  who?: (userId: bigint) => string;
}) {
  const [items, setItems] = useState<Item[] | null>(null);
  const [urls, setUrls] = useState<Record<string, string>>({});
  const [hashes, setHashes] = useState<Record<string, string>>({}); // of the bytes shown
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [error, setError] = useState("");
  const [open, setOpen] = useState<Item | null>(null);
  const dialog = useRef<HTMLDialogElement>(null);
  const made = useRef<string[]>([]); // every Blob URL made, revoked at unmount
  const key = owners.map((o) => `${o.type}:${o.id}`).join(",");

  useEffect(() => {
    let cancelled = false;
    setItems(null);
    (async () => {
      const found: Item[] = [];
      for (const owner of owners) {
        try {
          const r = await attachmentApi.listAttachments({ ownerType: owner.type, ownerId: owner.id });
          for (const a of r.attachments) found.push({ owner, a });
        } catch (e) {
          // Out of scope or gone: the same NOT_FOUND; nothing to show for that owner.
          if (!(e instanceof ConnectError && e.code === Code.NotFound)) throw e;
        }
      }
      if (cancelled) return;
      setItems(found);
      for (const { a } of found) {
        if (cancelled) return;
        if (!a.mediaType.startsWith("image/")) continue;
        try {
          const got = await fetchBlob(a);
          made.current.push(got.url);
          if (cancelled) return;
          setUrls((u) => ({ ...u, [a.id]: got.url }));
          setHashes((h) => ({ ...h, [a.id]: got.sha256 }));
        } catch (e) {
          if (!cancelled) setErrors((m) => ({ ...m, [a.id]: errorText(e) }));
        }
      }
    })().catch((e) => !cancelled && setError(errorText(e)));
    return () => {
      cancelled = true;
    };
  }, [key]);

  useEffect(
    () => () => {
      for (const url of made.current) URL.revokeObjectURL(url);
    },
    [],
  );

  useEffect(() => {
    if (open && dialog.current && !dialog.current.open) dialog.current.showModal?.();
  }, [open]);

  async function openPdf(a: Attachment) {
    try {
      let url = urls[a.id];
      if (!url) {
        const got = await fetchBlob(a);
        url = got.url;
        made.current.push(got.url);
        setUrls((u) => ({ ...u, [a.id]: got.url }));
      }
      const link = document.createElement("a");
      link.href = url;
      link.download = `${a.caption || a.id}.pdf`;
      link.click();
    } catch (e) {
      setErrors((m) => ({ ...m, [a.id]: errorText(e) }));
    }
  }

  const author = (id: bigint) => (who ? who(id) : t().user(String(id)));
  const caption = (a: Attachment) => a.caption || at().noCaption;
  return (
    <section aria-labelledby="h-attachments" id="attachments">
      <h2 id="h-attachments">{at().heading}</h2>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {!error && items === null && <p aria-live="polite">{at().loading}</p>}
      {items !== null && items.length === 0 && <p>{at().none}</p>}
      {items !== null && items.length > 0 && (
        <ul class="gallery">
          {items.map(({ owner, a }) => (
            <li key={a.id} data-attachment-id={a.id} data-sha256={a.sha256}>
              {a.mediaType.startsWith("image/") ? (
                urls[a.id] ? (
                  <button type="button" class="thumb" aria-label={at().open(caption(a))} onClick={() => setOpen({ owner, a })}>
                    <img src={urls[a.id]} alt={caption(a)} data-bytes-sha256={hashes[a.id]} />
                  </button>
                ) : (
                  <p class={errors[a.id] ? "error" : ""}>{errors[a.id] ?? at().loading}</p>
                )
              ) : (
                <p>
                  <a
                    href={`#attachment-${a.id}`}
                    onClick={(e) => {
                      e.preventDefault();
                      void openPdf(a);
                    }}
                  >
                    {at().pdf(caption(a))}
                  </a>
                  {errors[a.id] && <span class="error"> {errors[a.id]}</span>}
                </p>
              )}
              <dl class="facts">
                <dt>{at().owner[owner.type] ?? ""}</dt>
                <dd>{owner.label ?? ""}</dd>
                <dt>{at().takenAt}</dt>
                <dd>{formatTime(a.takenAtMs)}</dd>
                <dt>{at().author}</dt>
                <dd>{author(a.authorId)}</dd>
                <dt>{at().gps}</dt>
                <dd>{a.latitude || a.longitude ? `${a.latitude.toFixed(5)}, ${a.longitude.toFixed(5)}` : "—"}</dd>
              </dl>
              <p class="caption">{caption(a)}</p>
            </li>
          ))}
        </ul>
      )}
      {open && urls[open.a.id] && (
        <dialog ref={dialog} class="photo" aria-label={caption(open.a)} onClose={() => setOpen(null)}>
          <img src={urls[open.a.id]} alt={caption(open.a)} class="full" />
          <p>
            {caption(open.a)} — {formatTime(open.a.takenAtMs)}
          </p>
          <form method="dialog">
            <button type="submit">{at().close}</button>
          </form>
        </dialog>
      )}
    </section>
  );
}
