// WebXR immersive-ar: the avatar stands on a real floor found by hit-test.
//
// The "Enter AR" button is shown only where navigator.xr.isSessionSupported("immersive-ar") says
// yes. In the session a reticle follows the detected surface; a tap (select) places the avatar
// there, facing the viewer, at its real height. The page's panels stay visible as a DOM overlay.
import { Vector3 } from "three";
import type { AvatarView } from "./avatar";

export async function arSupported(): Promise<boolean> {
  const xr = (navigator as Navigator & { xr?: XRSystem }).xr;
  if (!xr) return false;
  try {
    return await xr.isSessionSupported("immersive-ar");
  } catch {
    return false;
  }
}

export async function enterAr(view: AvatarView, overlay: HTMLElement, onEnd: () => void): Promise<void> {
  const xr = (navigator as Navigator & { xr?: XRSystem }).xr;
  if (!xr) throw new Error("WebXR is not available in this browser");
  const session = await xr.requestSession("immersive-ar", {
    requiredFeatures: ["hit-test"],
    optionalFeatures: ["dom-overlay", "local-floor"],
    domOverlay: { root: overlay },
  });
  view.renderer.xr.setReferenceSpaceType("local");
  await view.renderer.xr.setSession(session);
  const viewerSpace = await session.requestReferenceSpace("viewer");
  const hitSource = await session.requestHitTestSource?.({ space: viewerSpace });
  let placed = false;
  view.stage.visible = false;
  session.addEventListener("select", () => {
    if (!view.stageCanPlace()) return;
    const cam = view.renderer.xr.getCamera();
    view.placeOnReticle(new Vector3().setFromMatrixPosition(cam.matrixWorld));
    view.stage.visible = true;
    placed = true;
  });
  view.setXrFrame((frame) => {
    const space = view.renderer.xr.getReferenceSpace();
    const hit = hitSource && space ? frame.getHitTestResults(hitSource)[0] : undefined;
    const pose = hit && space ? hit.getPose(space) : undefined;
    view.setReticle(pose ? (pose.transform.matrix as Float32Array) : undefined);
    if (!placed && pose) view.stage.visible = false;
  });
  session.addEventListener("end", () => {
    hitSource?.cancel();
    view.setXrFrame(undefined);
    view.resetStage();
    view.stage.visible = true;
    onEnd();
  });
}
