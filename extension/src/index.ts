/**
 * The agh_nb JupyterLab extension: the "Agent sessions" sidebar (left area).
 *
 * Owns: the plugin that builds `SessionsPanel` on the server's settings, puts it in the left
 * sidebar (restored by JupyterLab's layout restorer, like every sidebar) and raises a
 * notification for each new permission request. Everything it shows comes from the agh_nb
 * server extension's HTTP API; without it, the panel says so in one line.
 */

import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';

import { AghClient, IApproval } from './api';
import { INotifier, SessionsPanel } from './panel';

const PANEL_ID = 'agh-nb-sessions';
const OPEN_COMMAND = 'agh_nb:open-sessions';
const NOTIFICATION_CHARS = 140;

/** A plain icon of two stacked session cards (our own SVG; no agent text goes near it). */
const sessionsIcon = new LabIcon({
  name: 'agh_nb:sessions',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<path d="M4 4h13a1 1 0 0 1 1 1v2H6v9H4a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1z"/>' +
    '<path d="M8 9h12a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H8a1 1 0 0 1-1-1v-9a1 1 0 0 1 1-1zm2 3v2h8v-2zm0 4v2h5v-2z"/>' +
    '</g></svg>'
});

function notifier(app: JupyterFrontEnd): INotifier {
  return {
    added(approval: IApproval, session: string): string | null {
      // Notification shows its message as text; it is cut to its usual length here.
      let message = `${session} asks: ${approval.title || approval.kind || 'a permission'}`;
      if (message.length > NOTIFICATION_CHARS) {
        message = message.slice(0, NOTIFICATION_CHARS - 1) + '…';
      }
      return Notification.warning(message, {
        autoClose: false,
        actions: [
          {
            label: 'Show',
            caption: 'Open the Agent sessions sidebar',
            callback: () => app.shell.activateById(PANEL_ID)
          }
        ]
      });
    },
    dismiss(id: string): void {
      Notification.dismiss(id);
    }
  };
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'agh_nb:sidebar',
  description: 'Agent sessions and their approvals, in the left sidebar.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (app: JupyterFrontEnd, restorer: ILayoutRestorer | null, palette: ICommandPalette | null) => {
    const panel = new SessionsPanel(new AghClient(app.serviceManager.serverSettings), notifier(app));
    panel.id = PANEL_ID;
    panel.title.icon = sessionsIcon;
    panel.title.caption = 'Agent sessions';
    app.shell.add(panel, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }
    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Agent sessions',
      caption: 'Show the agh_nb sessions and approvals sidebar',
      execute: () => app.shell.activateById(PANEL_ID)
    });
    palette?.addItem({ command: OPEN_COMMAND, category: 'agh_nb' });
    panel.start();
  }
};

export default plugin;
